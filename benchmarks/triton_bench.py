"""The Triton layer (course_lib.triton_linear) against cuBLAS and torch.compile, on a GPU.

    python benchmarks/triton_bench.py              # on a CUDA machine (gpu_suite.sh step 06)
    python benchmarks/triton_bench.py --dry-run    # on the CPU: checks the section would start

Rows, each with the Triton layer's time and its ratio to the reference measured in the same run:
  * forward, 784 -> 128 in float32 at B = 64 ... 8192: Triton's fused bias + ReLU kernel against
    F.linear followed by relu (target: faster, ratio < 1), and without ReLU against F.linear;
  * forward + backward of the layer at the same sizes against F.linear;
  * one forward + backward of the course MLP (784-128-64-10) built from TritonLinear against
    torch.compile of the course MLP (course_lib.Linear layers);
  * forward 4096 x 4096 in float16 at B = 4096 against F.linear (target: ratio <= 1.3).
The matrix-multiply kernel is autotuned over tile sizes (triton.autotune, keyed on the shape), and
the layer's Function uses the autotuned kernel for all three products.

--dry-run runs the same code on the CPU under Triton's interpreter (TRITON_INTERPRET=1, set
before Triton is imported) with tiny shapes (a 40 -> 24 layer at B = 1 and 7, 32 x 32 float16), one tile configuration, no torch.compile and one
timing round: it checks that every kernel builds, launches and agrees with F.linear, not speed.
"""

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true",
                        help="CPU, Triton's interpreter, tiny shapes: check the section would start")
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds per case (default 10)")
    parser.add_argument("--min-seconds", type=float, default=0.02,
                        help="time each contender for at least this long per round (default 0.02)")
    return parser.parse_args(argv)


ARGS = parse_args()
if ARGS.dry_run:
    os.environ["TRITON_INTERPRET"] = "1"  # Triton reads it when imported: before the imports below

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from timing import compare  # noqa: E402

from course_lib import triton_linear  # noqa: E402
from course_lib.models import NeuralNet  # noqa: E402
from course_lib.triton_linear import TritonLinear, TritonLinearFunction, matmul_kernel  # noqa: E402

FORWARD_TARGET = 1.3  # the target: forward within 1.3x of cuBLAS at 4096 x 4096, float16
TILE_CONFIGS = [(128, 128, 32, 4, 4), (128, 64, 32, 4, 4), (64, 128, 32, 4, 4), (64, 64, 32, 4, 3),
                (128, 256, 64, 8, 3), (256, 128, 64, 8, 3), (64, 32, 32, 2, 4), (32, 64, 32, 2, 4)]


def autotuned_matmul(dry_run: bool):
    """A drop-in for ``triton_linear.matmul`` whose kernel picks its tiles per shape (autotune)."""
    triton = triton_linear.load_triton()
    configs = [triton.Config({"BLOCK_M": m, "BLOCK_N": n, "BLOCK_K": k}, num_warps=w, num_stages=s)
               for m, n, k, w, s in (TILE_CONFIGS[3:4] if dry_run else TILE_CONFIGS)]
    kernel = triton.autotune(configs=configs, key=["M", "N", "K"])(triton.jit(matmul_kernel))

    def matmul(a, b, bias=None, relu=False, out=None):
        triton_linear.require_triton(a, b)
        (M, K), N = a.shape, b.shape[1]
        out = torch.empty(M, N, dtype=a.dtype, device=a.device) if out is None else out
        if out.numel():
            grid = lambda meta: (triton.cdiv(M, meta["BLOCK_M"]), triton.cdiv(N, meta["BLOCK_N"]))  # noqa: E731
            kernel[grid](a, b, out, bias if bias is not None else out, M, N, K, *a.stride(),
                         *b.stride(), *out.stride(), HAS_BIAS=bias is not None, RELU=relu,
                         ACC_DTYPE=triton_linear._accumulator(a.dtype))
        return out

    return matmul


def row(name, times, ours, reference):
    (t_ours, _), (t_ref, _) = times[ours], times[reference]
    ratio = t_ours / t_ref
    print(f"| {name} | {t_ours * 1e6:,.1f} | {t_ref * 1e6:,.1f} ({reference}) | {ratio:.2f} |")
    return ratio


def layer_cases(device, batches, args, sizes=(784, 128)):
    """Forward (fused ReLU, plain) and forward + backward of one n_in -> n_out layer, float32."""
    fused_ratios = {}
    W = torch.randn(*sizes, device=device, requires_grad=True)
    b = torch.randn(sizes[1], device=device, requires_grad=True)
    for B in batches:
        X = torch.randn(B, sizes[0], device=device, requires_grad=True)
        with torch.no_grad():
            Y = triton_linear.linear_forward(X, W, b, relu=True)
            torch.testing.assert_close(Y, F.relu(F.linear(X, W.T, b)), rtol=1e-4, atol=1e-4)
            times = compare({"triton fused": lambda X=X, W=W, b=b: triton_linear.linear_forward(X, W, b, relu=True),
                             "F.linear + relu": lambda X=X, W=W, b=b: F.relu(F.linear(X, W.T, b)),
                             "triton": lambda X=X, W=W, b=b: triton_linear.linear_forward(X, W, b),
                             "F.linear": lambda X=X, W=W, b=b: F.linear(X, W.T, b)}, device, args.rounds, args.min_seconds)
        fused_ratios[B] = row(f"forward + ReLU, B = {B}", times, "triton fused", "F.linear + relu")
        row(f"forward, B = {B}", times, "triton", "F.linear")
        times = compare({"triton": lambda X=X, W=W, b=b: TritonLinearFunction.apply(X, W, b).sum().backward(),
                         "F.linear": lambda X=X, W=W, b=b: F.linear(X, W.T, b).sum().backward()},
                        device, args.rounds, args.min_seconds)
        row(f"forward + backward, B = {B}", times, "triton", "F.linear")
    return fused_ratios


def mlp_cases(device, batches, args):
    """One forward + backward of the course MLP: TritonLinear layers against torch.compile."""
    torch.manual_seed(0)
    reference = NeuralNet().to(device)
    ours = NeuralNet().to(device)
    for name in ("fc1", "fc2", "fc3"):
        setattr(ours, name, TritonLinear.from_linear(getattr(reference, name)))
    compiled = torch.compile(reference)
    for B in batches:
        x, y = torch.randn(B, 784, device=device), torch.randint(0, 10, (B,), device=device)
        times = compare({"triton MLP": lambda x=x, y=y: F.cross_entropy(ours(x), y).backward(),
                         "torch.compile": lambda x=x, y=y: F.cross_entropy(compiled(x), y).backward()},
                        device, args.rounds, args.min_seconds)
        row(f"MLP forward + backward, B = {B}", times, "triton MLP", "torch.compile")


def square_case(device, n, dtype, args):
    """Forward of an n x n layer at B = n, against cuBLAS (F.linear)."""
    X, W, b = (torch.randn(*s, device=device, dtype=dtype) for s in ((n, n), (n, n), (n,)))
    Y = triton_linear.linear_forward(X, W, b)
    torch.testing.assert_close(Y.float(), F.linear(X, W.T, b).float(), rtol=2e-2, atol=2e-1)
    times = compare({"triton": lambda: triton_linear.linear_forward(X, W, b),
                     "F.linear": lambda: F.linear(X, W.T, b)}, device, args.rounds, args.min_seconds)
    return row(f"forward {n} x {n}, {str(dtype).removeprefix('torch.')}, B = {n}", times, "triton", "F.linear")


def main(args) -> int:
    device = "cpu" if args.dry_run else "cuda"
    if not args.dry_run and not torch.cuda.is_available():
        print("no CUDA device here: run on a GPU machine, or with --dry-run", file=sys.stderr)
        return 3
    if args.dry_run:
        args.rounds, args.min_seconds = 1, 0.0
    triton_linear.matmul = autotuned_matmul(args.dry_run)  # the Function's three products use it
    batches = (1, 7) if args.dry_run else (64, 256, 1024, 4096, 8192)
    gpu = "none (dry run, Triton's interpreter)" if args.dry_run else torch.cuda.get_device_name()
    print(f"triton_bench: torch {torch.__version__}, triton {triton_linear.load_triton().__version__}, GPU {gpu}")
    print("\n| case | Triton (us per call) | reference (us per call) | ratio |\n|---|--:|--:|--:|")
    fused = layer_cases(device, batches, args, (40, 24) if args.dry_run else (784, 128))
    if args.dry_run:
        print("| MLP forward + backward against torch.compile | skipped in the dry run | | |")
        square = square_case(device, 32, torch.float16, args)
    else:
        mlp_cases(device, batches, args)
        square = square_case(device, 4096, torch.float16, args)
    met = "met" if square <= FORWARD_TARGET else "NOT met"
    print(f"\ntarget: forward within {FORWARD_TARGET}x of cuBLAS at 4096 x 4096 float16: "
          f"{square:.2f}x, {met}" + (" (dry run: 32 x 32, timings meaningless)" if args.dry_run else ""))
    faster = [B for B, ratio in fused.items() if ratio < 1]
    print(f"target: fused bias + ReLU forward faster than F.linear + relu at 784 -> 128: at B = "
          f"{faster or 'none'} of {list(fused)}" + (" (dry run: 40 -> 24)" if args.dry_run else ""))
    if args.dry_run:
        print("dry run: every kernel built, launched and agreed with F.linear; the GPU section would start")
    return 0


if __name__ == "__main__":
    sys.exit(main(ARGS))
