"""Instructions per forward+backward step of the 784->128 layer: ``Linear_Layer`` against ``F.linear``.

Wall-clock timings on a shared virtual machine swing by 10-20% from one round to the next, more
than the few percent this comparison is about. Instruction counts do not: valgrind's callgrind
counts every instruction a process executes, the same number on every run. For each contender
and batch size this script counts a process that runs 0 steps and one that runs ``--steps``
steps (after the same set-up and one warm-up step); the difference divided by ``--steps`` is the
cost of one step, set-up and Python start-up cancelled out.

Both contenders run the same BLAS kernels (see ``Linear``'s weight layout), so the difference is
the overhead of the Python ``autograd.Function`` against PyTorch's built-in autograd nodes. Under
valgrind, MKL picks its AVX2 kernels (valgrind does not emulate AVX-512), so the counts describe
that code path. One thread, as in a single-core measurement.

Usage (needs valgrind; about 15 minutes on 2 cores):
    python benchmarks/linear_instructions.py [--batches 64 512] [--steps 50]
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor


def child(which: str, steps: int, batch: int) -> None:
    """Set up one contender, take a warm-up step, then ``steps`` more (what callgrind counts)."""
    import torch
    import torch.nn.functional as F

    from course_lib import Linear, Linear_Layer

    torch.set_num_threads(1)
    torch.manual_seed(0)
    ours = Linear(784, 128)
    theirs = ours.to_torch()
    x = torch.randn(batch, 784)  # the first layer's input is data: no gradient
    grad = torch.randn(batch, 128)
    if which == "ours":
        fn, w, b = Linear_Layer.apply, ours.weight, ours.bias
    else:
        fn, w, b = F.linear, theirs.weight, theirs.bias

    def step():
        w.grad = b.grad = None
        fn(x, w, b).backward(grad)

    for _ in range(1 + steps):
        step()


def count(which: str, steps: int, batch: int) -> int:
    """Instructions executed by a child process (callgrind's ``Collected`` total)."""
    env = {**os.environ, "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    result = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
         sys.executable, __file__, "--child", which, str(steps), str(batch)],
        capture_output=True, text=True, env=env, check=True)
    match = re.search(r"Collected\s*:\s*(\d+)", result.stderr)
    if not match:
        raise RuntimeError(f"no instruction count in valgrind's output:\n{result.stderr[-2000:]}")
    return int(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 512])
    parser.add_argument("--steps", type=int, default=50, help="steps counted per process (default 50)")
    parser.add_argument("--workers", type=int, default=2, help="valgrind processes at once (default 2)")
    parser.add_argument("--child", nargs=3, metavar=("WHICH", "STEPS", "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), int(args.child[2]))
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian: sudo apt-get install valgrind)")
    jobs = [(which, steps, batch) for batch in args.batches for which in ("ours", "torch")
            for steps in (0, args.steps)]
    with ThreadPoolExecutor(args.workers) as pool:
        counts = dict(zip(jobs, pool.map(lambda job: count(*job), jobs)))
    print(f"784->128 layer, forward + backward, instructions per step (callgrind, {args.steps} steps)")
    print("| batch | Linear_Layer | F.linear | ratio |")
    print("|--:|--:|--:|--:|")
    for batch in args.batches:
        per_step = {which: (counts[(which, args.steps, batch)] - counts[(which, 0, batch)]) / args.steps
                    for which in ("ours", "torch")}
        print(f"| {batch} | {per_step['ours']:,.0f} | {per_step['torch']:,.0f} | "
              f"{per_step['ours'] / per_step['torch']:.3f} |")


if __name__ == "__main__":
    main()
