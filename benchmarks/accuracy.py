"""Test accuracy of the default training recipe (``TrainConfig()``), dataset by dataset.

Every run uses the defaults that ``python -m course_lib train`` uses; only the dataset, the seed
and the device change. Reported per run: test accuracy of the best checkpoint (lowest validation
loss), training seconds, and the training seconds until the model first reaches the dataset's
target test accuracy (``TARGET``; measured after every epoch, evaluation time excluded).

    fashion-mnist  target >= 89.0% test accuracy, 89% within 15 s of training on a 2-core CPU
    mnist-5k       target >= 94% on the real 10,000-image MNIST test set, read from --mnist-test
                   when that folder exists (it is not part of the project)
    mnist          target >= 98.0%; needs MNIST on disk (data/README.md: also from npm) or a
                   network, else reported as not measured
    proxy          (--proxy) a stand-in for full MNIST offline: train on mnist-5k's 4,000 digits
                   plus the first 5,000 real test digits, test on the other 5,000

Usage:
    python benchmarks/accuracy.py [--datasets fashion-mnist mnist-5k mnist] [--seeds 0 1 2]
                                  [--proxy] [--device auto] [--mnist-test DIR]
"""

import argparse
import tempfile
import time
from pathlib import Path

import torch

from course_lib.config import TrainConfig
from course_lib.datasets import DATASETS, DatasetUnavailable, RawData, load_data, load_raw, mnist_5k, to_split
from course_lib.idx import read_idx
from course_lib.paths import repo_root
from course_lib.train import EVAL_BATCH_SIZE, Hooks, evaluate, fit, resolve_device

# Test accuracy to reach, for the "seconds to target" column (mnist-5k's target, 94%, is on the
# real MNIST test set, reported in its own column).
TARGET = {"fashion-mnist": 0.89, "mnist": 0.98, "mnist-proxy": 0.98}
DEFAULT_MNIST_TEST = (repo_root() or Path.cwd()).parent / "shared" / "data" / "mnist-test"


def real_mnist_test(folder: Path):
    """The 10,000 real MNIST test images and labels, or None when ``folder`` lacks them."""
    files = [folder / f"t10k-{kind}-idx{d}-ubyte.gz" for kind, d in (("images", 3), ("labels", 1))]
    if not all(f.is_file() for f in files):
        return None
    return read_idx(files[0]), read_idx(files[1]).long()


def run(dataset: str, seed: int, device, out_dir: str, data=None, extra_test=None):
    """Train with the defaults; return the row to print."""
    config = TrainConfig(dataset=dataset if dataset in DATASETS else "auto", seed=seed,
                         device=str(device), out_dir=out_dir)
    data = data if data is not None else load_data(config.dataset, device)
    reached = {"train_seconds": 0.0, "at": None, "epoch": None}

    def on_epoch(row, model):  # test accuracy after every epoch, for the time-to-target column
        reached["train_seconds"] += row.seconds
        if reached["at"] is None and dataset in TARGET:
            if evaluate(model, data.test.batches(EVAL_BATCH_SIZE))[1] >= TARGET[dataset]:
                reached["at"], reached["epoch"] = reached["train_seconds"], row.epoch

    result = fit(config, data=data, progress=False, hooks=Hooks(on_epoch=on_epoch))
    row = {"dataset": dataset, "seed": seed, "test_acc": result.test_acc,
           "best_epoch": result.record.best_epoch, "train_s": result.record.train_seconds,
           "samples_per_s": result.record.samples_per_second, "to_target_s": reached["at"],
           "to_target_epoch": reached["epoch"]}
    if extra_test is not None:
        images, labels = extra_test
        split = to_split(images, labels, data.mean, data.std, device)
        row["real_mnist_test_acc"] = evaluate(result.model, split.batches(EVAL_BATCH_SIZE))[1]
    return row


def proxy_data(real_test) -> RawData:
    """mnist-5k's training digits plus real test digits 0..4999; tested on 5000..9999."""
    small = mnist_5k()
    images, labels = real_test
    return RawData("mnist-proxy", torch.cat([small.train_images, images[:5000]]),
                   torch.cat([small.train_labels, labels[:5000]]), images[5000:], labels[5000:])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["fashion-mnist", "mnist-5k", "mnist"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--proxy", action="store_true", help="also the offline stand-in for MNIST")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--mnist-test", type=Path, default=DEFAULT_MNIST_TEST,
                        help="folder with the real t10k-*.gz MNIST test files")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    real_test = real_mnist_test(args.mnist_test)
    print(f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, "
          f"defaults {TrainConfig()}")
    rows, skipped = [], []
    with tempfile.TemporaryDirectory() as out_dir:
        jobs = [(name, None) for name in args.datasets]
        if args.proxy and real_test is not None:
            jobs.append(("mnist-proxy", proxy_data(real_test)))
        for name, raw in jobs:
            try:
                data = load_data(raw=raw if raw is not None else load_raw(name), device=device)
            except DatasetUnavailable as e:
                skipped.append(f"{name}: not measured (not on disk, and the download failed: "
                               f"{type(e).__name__})")
                continue
            extra = real_test if name == "mnist-5k" else None
            for seed in args.seeds:
                start = time.perf_counter()
                rows.append(run(name, seed, device, out_dir, data, extra))
                print(f"  {name} seed {seed}: {rows[-1]['test_acc']:.4f} "
                      f"({time.perf_counter() - start:.0f} s)", flush=True)
    print("\n| dataset | seed | test acc | real MNIST test acc | best epoch | train s | samples/s "
          "| s to target (epoch) |")
    print("|---|--:|--:|--:|--:|--:|--:|--:|")
    for r in rows:
        real = f"{100 * r['real_mnist_test_acc']:.2f}%" if "real_mnist_test_acc" in r else "-"
        to = f"{r['to_target_s']:.1f} ({r['to_target_epoch']})" if r["to_target_s"] else "-"
        print(f"| {r['dataset']} | {r['seed']} | {100 * r['test_acc']:.2f}% | {real} | "
              f"{r['best_epoch']} | {r['train_s']:.1f} | {r['samples_per_s']:,.0f} | {to} |")
    for line in skipped:
        print(line)


if __name__ == "__main__":
    main()
