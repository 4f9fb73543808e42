"""Training throughput on 1 and N processes: ``python -m course_lib train`` against
``torchrun --nproc_per_node=N -m course_lib train``, the same run, side by side in one script.

Each contender is the real command line, run in a subprocess on the same data (mnist-5k's digits,
written once as MNIST's IDX files), with the same global batch. The speed is the run log's
``samples_per_second``: samples trained on divided by the training time (start-up, data loading
and evaluation excluded). Contenders are interleaved round by round, alternating who goes first;
the best and the median round are reported.

Every contender gets the machine's cores, split between its processes (``OMP_NUM_THREADS``: all
of them for one process, half each for two...), so on a 2-core CPU two processes share the same
two cores that one process uses: expect no speed-up there, the table shows what the all-reduce
and the smaller per-process batches cost. On a machine with N GPUs, ``--device cuda --procs 1 N``
measures the scaling.

Usage:
    python benchmarks/ddp_throughput.py [--device cpu|cuda] [--procs 1 2] [--batch-size 512]
                                        [--epochs 3] [--rounds 3] [--threads N]
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from course_lib.datasets import load_raw, write_raw

REPO = Path(__file__).resolve().parent.parent


def command(procs: int, options: list) -> list:
    """``python -m course_lib train`` for 0 (plain, no torchrun), else torchrun with ``procs``."""
    launch = [sys.executable] if procs == 0 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}"]
    return [*launch, "-m", "course_lib", "train", *options]


def threads(procs: int, fixed: int | None) -> int:
    """Each process's threads: ``fixed``, else its share of the cores."""
    return fixed or max(1, (os.cpu_count() or 1) // max(procs, 1))


def samples_per_second(procs: int, options: list, out_dir: Path, fixed: int | None) -> float:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(threads(procs, fixed))}
    done = subprocess.run(command(procs, [*options, "--out-dir", str(out_dir)]), env=env,
                          capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command(procs, options))} failed:\n{done.stderr[-2000:]}")
    last = (out_dir / "runs.jsonl").read_text().splitlines()[-1]
    return json.loads(last)["samples_per_second"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--procs", type=int, nargs="+", default=[1, 2],
                        help="process counts to run under torchrun (plain python is always run)")
    parser.add_argument("--batch-size", type=int, default=512, help="the global batch")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None,
                        help="threads of every process (default: the cores, split between them)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        data_dir = write_raw(load_raw("mnist-5k"), Path(tmp) / "data" / "MNIST" / "raw").parent.parent
        options = ["--dataset", "mnist", "--data-dir", str(data_dir), "--device", args.device,
                   "--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "--quiet"]
        contenders = [0, *args.procs]
        speeds = {procs: [] for procs in contenders}
        for r in range(args.rounds):
            order = contenders if r % 2 == 0 else contenders[::-1]
            for procs in order:
                out_dir = Path(tmp) / f"runs{r}-{procs}"
                speeds[procs].append(samples_per_second(procs, options, out_dir, args.threads))

    print(f"torch {torch.__version__}, {platform.machine()}, {os.cpu_count()} CPU cores, device "
          f"{args.device}, global batch {args.batch_size}, {args.epochs} epochs of mnist-5k's "
          f"training digits, {args.rounds} interleaved rounds")
    print("| launch | processes | threads each | median samples/s | best samples/s | best / plain |")
    print("|---|--:|--:|--:|--:|--:|")
    best_plain = max(speeds[0])
    for procs in contenders:
        launch = "python -m course_lib train" if procs == 0 else f"torchrun --nproc_per_node={procs}"
        median, best = statistics.median(speeds[procs]), max(speeds[procs])
        print(f"| {launch} | {max(procs, 1)} | {threads(procs, args.threads)} | {median:,.0f} | "
              f"{best:,.0f} | {best / best_plain:.2f} |")


if __name__ == "__main__":
    main()
