"""Training throughput on 1 and N processes: ``python -m course_lib train`` against
``torchrun --nproc_per_node=N -m course_lib train``, the same run, side by side in one script.

Each contender is the real command line, run in a subprocess on the same data (mnist-5k's digits,
written once as MNIST's IDX files), with the same global batch. The speed is the run log's
``samples_per_second``: samples trained on divided by the training time (start-up, data loading
and evaluation excluded). Contenders are interleaved round by round, alternating who goes first;
the best and the median round are reported.

On a 2-core CPU two processes share the same two cores that one process uses (torchrun gives
each one thread), so expect no speed-up there: the table shows what the all-reduce costs. On a
machine with N GPUs, ``--device cuda --procs 1 N`` measures the scaling.

Usage:
    python benchmarks/ddp_throughput.py [--device cpu|cuda] [--procs 1 2] [--batch-size 512]
                                        [--epochs 3] [--rounds 3]
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


def samples_per_second(procs: int, options: list, out_dir: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
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
                speeds[procs].append(samples_per_second(procs, options, Path(tmp) / f"runs{r}-{procs}"))

    print(f"torch {torch.__version__}, {platform.machine()}, {os.cpu_count()} CPU cores, device "
          f"{args.device}, global batch {args.batch_size}, {args.epochs} epochs of mnist-5k's "
          f"training digits, {args.rounds} interleaved rounds")
    print("| launch | processes | median samples/s | best samples/s | best / plain |")
    print("|---|--:|--:|--:|--:|")
    best_plain = max(speeds[0])
    for procs in contenders:
        launch = "python -m course_lib train" if procs == 0 else f"torchrun --nproc_per_node={procs}"
        print(f"| {launch} | {max(procs, 1)} | {statistics.median(speeds[procs]):,.0f} | "
              f"{max(speeds[procs]):,.0f} | {max(speeds[procs]) / best_plain:.2f} |")


if __name__ == "__main__":
    main()
