"""Epoch time of the course MLP on 60,000 MNIST-shaped samples: eager vs ``torch.compile`` vs
``reduce-overhead`` (CUDA graphs), float32 vs bfloat16 autocast, at batch 512 and 4096.

The data are random tensors of MNIST's shape held on the device (the fast path of
``course_lib.datasets``: no loader), so the time is the model's: forward, cross-entropy, backward
and an SGD-with-momentum step for every batch. Batches are taken in a fixed order without the
short last batch, so every step has the same shapes (a new shape would mean a new compilation and,
with ``reduce-overhead``, a new CUDA graph). Each configuration trains one warm-up epoch (which
includes compiling), then ``--epochs`` timed epochs; the best and the median are reported.
Target on a GPU: <= 20 ms per epoch at batch >= 4096.

Usage:
    python benchmarks/compile_epoch.py [--device cuda|cpu] [--samples 60000] [--batches 512 4096]
                                       [--epochs 5] [--modes eager default reduce-overhead]
                                       [--precisions float32 bfloat16] [--quick]
"""

import argparse
import platform
import statistics
import time

import torch
import torch._inductor.config
import torch.nn.functional as F
from timing import sync

from course_lib.models import NeuralNet


def run_epoch(model, optimizer, images, labels, batch, precision):
    device_type = images.device.type
    for start in range(0, len(labels) - batch + 1, batch):
        torch.compiler.cudagraph_mark_step_begin()  # reduce-overhead: a new step may reuse buffers
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=precision == "bfloat16"):
            loss = F.cross_entropy(model(images[start:start + batch]), labels[start:start + batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return loss


def measure(mode, precision, batch, data, epochs):
    """(warm-up seconds, list of epoch seconds) for one configuration."""
    images, labels = data
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = NeuralNet(128).to(images.device)
    if mode != "eager":
        model = torch.compile(model, fullgraph=True, mode=mode)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    times = []
    for _ in range(epochs + 1):
        start = time.perf_counter()
        loss = run_epoch(model, optimizer, images, labels, batch, precision)
        sync(images.device)
        times.append(time.perf_counter() - start)
    if not torch.isfinite(loss):
        raise RuntimeError(f"{mode} {precision} batch {batch}: the loss became {loss.item()}")
    return times[0], times[1:]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=["cpu", "cuda"])
    parser.add_argument("--samples", type=int, default=60_000)
    parser.add_argument("--batches", type=int, nargs="+", default=[512, 4096])
    parser.add_argument("--epochs", type=int, default=5, help="timed epochs per configuration")
    parser.add_argument("--modes", nargs="+", default=["eager", "default", "reduce-overhead"],
                        help="eager, or torch.compile modes (default, reduce-overhead, max-autotune)")
    parser.add_argument("--precisions", nargs="+", default=["float32", "bfloat16"],
                        choices=["float32", "bfloat16"])
    parser.add_argument("--quick", action="store_true",
                        help="4,096 samples, batch 512, 1 epoch, eager and default: a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.samples, args.batches, args.epochs = 4096, [512], 1
        args.modes = [m for m in args.modes if m != "reduce-overhead"]
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available here (try --device cpu --quick)")
    device = torch.device(args.device)
    if device.type == "cpu":
        # Compile in this process: a pool of compile workers left running competes with the
        # timed steps for a small CPU's cores.
        torch._inductor.config.compile_threads = 1
    g = torch.Generator().manual_seed(0)
    data = (torch.randn(args.samples, 1, 28, 28, generator=g).to(device),
            torch.randint(0, 10, (args.samples,), generator=g).to(device))
    name = torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"torch {torch.__version__}, device {device} ({name}), {args.samples:,} samples, "
          f"{args.epochs} timed epochs after one warm-up epoch")
    print("\n| batch | mode | precision | epoch ms (best) | epoch ms (median) | samples/s (best) "
          "| warm-up epoch s (incl. compile) |")
    print("|--:|---|---|--:|--:|--:|--:|")
    for batch in args.batches:
        for precision in args.precisions:
            for mode in args.modes:
                warm, times = measure(mode, precision, batch, data, args.epochs)
                best, median = min(times), statistics.median(times)
                used = args.samples - args.samples % batch
                print(f"| {batch} | {mode} | {precision} | {best * 1e3:.1f} | {median * 1e3:.1f} "
                      f"| {used / best:,.0f} | {warm:.1f} |", flush=True)


if __name__ == "__main__":
    main()
