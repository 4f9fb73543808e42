"""Instructions per forward+backward step of one layer: the course's Functions against ``F.linear``.

Wall-clock timings on a shared virtual machine swing by 10-20% from one round to the next, more
than the few percent this comparison is about. Instruction counts swing far less: valgrind's
callgrind counts every instruction a process executes, whatever else the machine does. For each
contender and batch size this script counts a process that runs 0 steps and one that runs
``--steps`` steps (after the same set-up and one warm-up step); the difference divided by
``--steps`` is the cost of one step, set-up and Python start-up cancelled out.

The count is not quite the same on every run: a process's total moves by a few million
instructions from one run to the next (why was not isolated: where memory lands and when Python's
garbage collector runs are candidates), and the difference of two processes carries that. Divided by 50 steps it moved
by up to 45,000 instructions per step between two runs (benchmarks/RESULTS.md), as much as the
difference being measured; divided by the default 1,000 steps, by a few thousand.

The contenders: ``fast.linear`` (what ``course_lib.layers.Linear`` runs), the plain reference
``Linear_Layer.apply`` (``--plain``), ``FloorLinear`` (``--floor``: the least a Python
``autograd.Function`` can do for this layer, from ``linear_vs_torch.py``) and ``F.linear``. The
fast one runs the same BLAS kernels as ``F.linear`` (see ``Linear``'s weight layout), so the
difference is the overhead of a Python ``autograd.Function`` against PyTorch's built-in autograd
nodes. Under valgrind, MKL picks its AVX2 kernels (valgrind does not emulate AVX-512), so the counts describe
that code path. One thread, as in a single-core measurement.

Usage (needs valgrind; the defaults, 128->64 at batch 64, about 20 minutes on 2 cores with
``--plain --floor``; a larger shape or batch takes longer in proportion to its instructions):
    python benchmarks/linear_instructions.py [--shape 128 64] [--batches 64] [--steps 1000] [--plain] [--floor]
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor


def child(which: str, steps: int, batch: int, shape: tuple) -> None:
    """Set up one contender, take a warm-up step, then ``steps`` more (what callgrind counts)."""
    import torch
    import torch.nn.functional as F

    from course_lib import Linear, Linear_Layer, fast

    torch.set_num_threads(1)
    torch.manual_seed(0)
    in_f, out_f = shape
    ours = Linear(in_f, out_f)
    theirs = ours.to_torch()
    x = torch.randn(batch, in_f).requires_grad_(in_f != 784)  # the first layer's input is data
    grad = torch.randn(batch, out_f)
    if which == "floor":
        from linear_vs_torch import FloorLinear  # this script's folder is on sys.path
        fn, w, b = FloorLinear.apply, ours.weight, ours.bias
    else:
        fn, w, b = {"ours": (fast.linear, ours.weight, ours.bias),
                    "plain": (Linear_Layer.apply, ours.weight, ours.bias),
                    "torch": (F.linear, theirs.weight, theirs.bias)}[which]

    def step():
        w.grad = b.grad = x.grad = None
        fn(x, w, b).backward(grad)

    for _ in range(1 + steps):
        step()


def count(which: str, steps: int, batch: int, shape: tuple) -> int:
    """Instructions executed by a child process (callgrind's ``Collected`` total)."""
    env = {**os.environ, "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    result = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
         sys.executable, __file__, "--child", which, str(steps), str(batch), *map(str, shape)],
        capture_output=True, text=True, env=env, check=True)
    match = re.search(r"Collected\s*:\s*(\d+)", result.stderr)
    if not match:
        raise RuntimeError(f"no instruction count in valgrind's output:\n{result.stderr[-2000:]}")
    return int(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=2, default=[128, 64], metavar=("IN", "OUT"))
    parser.add_argument("--batches", type=int, nargs="+", default=[64])
    parser.add_argument("--steps", type=int, default=1000, help="steps counted per process (default 1000)")
    parser.add_argument("--plain", action="store_true", help="count the plain Linear_Layer too")
    parser.add_argument("--floor", action="store_true",
                        help="count FloorLinear too (the least a Python autograd.Function can do)")
    parser.add_argument("--workers", type=int, default=2, help="valgrind processes at once (default 2)")
    parser.add_argument("--child", nargs=5, metavar=("WHICH", "STEPS", "BATCH", "IN", "OUT"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        which, steps, batch, in_f, out_f = args.child
        child(which, int(steps), int(batch), (int(in_f), int(out_f)))
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian: sudo apt-get install valgrind)")
    contenders = ("ours",) + ("plain",) * args.plain + ("floor",) * args.floor + ("torch",)
    shape = tuple(args.shape)
    jobs = [(which, steps, batch, shape) for batch in args.batches for which in contenders
            for steps in (0, args.steps)]
    with ThreadPoolExecutor(args.workers) as pool:
        counts = dict(zip(jobs, pool.map(lambda job: count(*job), jobs)))
    print(f"{shape[0]}->{shape[1]} layer, forward + backward, instructions per step "
          f"(callgrind, {args.steps} steps)")
    names = {"ours": "fast.linear (Linear)", "plain": "Linear_Layer (plain)",
             "floor": "FloorLinear (floor)", "torch": "F.linear"}
    floor_head = " | floor minus F.linear | fast minus floor" if args.floor else ""
    print("| batch | " + " | ".join(names[w] for w in contenders) + " | ratio fast/F.linear "
          "| fast minus F.linear" + floor_head + " |")
    print("|--:|" + "--:|" * (len(contenders) + 2 + 2 * args.floor))
    for batch in args.batches:
        per_step = {w: (counts[(w, args.steps, batch, shape)] - counts[(w, 0, batch, shape)])
                    / args.steps for w in contenders}
        cells = " | ".join(f"{per_step[w]:,.0f}" for w in contenders)
        floor_cells = (f" | {per_step['floor'] - per_step['torch']:,.0f} "
                       f"| {per_step['ours'] - per_step['floor']:,.0f}") if args.floor else ""
        print(f"| {batch} | {cells} | {per_step['ours'] / per_step['torch']:.3f} "
              f"| {per_step['ours'] - per_step['torch']:,.0f}{floor_cells} |")


if __name__ == "__main__":
    main()
