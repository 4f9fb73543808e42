"""The course MLP's training step, eager vs ``torch.compile``, custom Linear vs ``nn.Linear``;
per-sample gradients, ``vmap`` vs a Python loop. Side by side in one run.

1. One training step (forward, cross-entropy, backward, SGD with momentum) of ``NeuralNet`` at
   batch 64, 512 and 4096, four contenders with identical weights: eager custom ``Linear``,
   ``torch.compile``d custom ``Linear``, eager ``nn.Linear``, compiled ``nn.Linear``. The model
   is compiled (``fullgraph=True``, default Inductor backend), as ``train --compile`` does; the
   first call's compile time is reported apart. Contenders are interleaved round by round,
   alternating who goes first; median and best round per call.
   Targets: compiled custom >= 1.0x eager custom at every batch, within 5% of compiled nn.Linear.
2. The gradient of every parameter for each of 512 samples: ``vmap(grad(...))`` over
   ``functional_call`` against a Python loop of 512 backward passes. Target: >= 20x.

Usage:
    python benchmarks/compile_step.py [--device cpu|cuda] [--batches 64 512 4096]
                                      [--rounds 9] [--min-seconds 0.2] [--threads N] [--quick]
"""

import argparse
import platform
import time

import torch
import torch._inductor.config
import torch.nn.functional as F
from linear_vs_torch import train_step
from timing import compare, sync
from torch.func import functional_call, grad, vmap
from train_throughput import with_torch_linear

from course_lib.models import NeuralNet


def contenders(batch, device):
    """name -> (step function, compile seconds or None), all four from one set of weights."""
    torch.manual_seed(0)
    initial = NeuralNet(128).state_dict()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 1, 28, 28, generator=g).to(device)
    y = torch.randint(0, 10, (batch,), generator=g).to(device)
    steps = {}
    for layer in ("custom", "nn.Linear"):
        for mode in ("eager", "compiled"):
            model = NeuralNet(128)
            model.load_state_dict(initial)
            model = (model if layer == "custom" else with_torch_linear(model)).to(device)
            if mode == "compiled":
                model = torch.compile(model, fullgraph=True)
            step = train_step(model, x, y)
            start = time.perf_counter()
            step()  # eager: warm-up; compiled: traces, differentiates and generates code
            sync(device)
            steps[f"{mode} {layer}"] = (step, time.perf_counter() - start if mode == "compiled" else None)
    return steps


def step_table(device, batches, rounds, min_seconds):
    print("\nTraining step (forward, cross-entropy, backward, SGD with momentum), microseconds")
    print("| batch | eager custom | compiled custom | eager nn.Linear | compiled nn.Linear "
          "| eager/compiled custom | compiled custom / compiled nn.Linear | compile s (custom, nn) |")
    print("|--:|--:|--:|--:|--:|--:|--:|--:|")
    for batch in batches:
        torch._dynamo.reset()
        steps = contenders(batch, device)
        times = compare({name: fn for name, (fn, _) in steps.items()}, device, rounds, min_seconds)
        med = {name: t[0] * 1e6 for name, t in times.items()}
        best = {name: t[1] * 1e6 for name, t in times.items()}
        cells = " | ".join(f"{med[n]:.0f} ({best[n]:.0f})" for n in
                           ("eager custom", "compiled custom", "eager nn.Linear", "compiled nn.Linear"))
        print(f"| {batch} | {cells} | {med['eager custom'] / med['compiled custom']:.2f} "
              f"({best['eager custom'] / best['compiled custom']:.2f}) | "
              f"{med['compiled custom'] / med['compiled nn.Linear']:.3f} "
              f"({best['compiled custom'] / best['compiled nn.Linear']:.3f}) | "
              f"{steps['compiled custom'][1]:.1f}, {steps['compiled nn.Linear'][1]:.1f} |")
    print("each cell: median (best round); ratios > 1 in the first ratio column mean compiled is faster")


def per_sample_table(device, batch, rounds):
    torch.manual_seed(0)
    model = NeuralNet(128).to(device)
    params = {name: p.detach() for name, p in model.named_parameters()}
    g = torch.Generator().manual_seed(2)
    x = torch.randn(batch, 784, generator=g).to(device)
    y = torch.randint(0, 10, (batch,), generator=g).to(device)

    def sample_loss(params, xi, yi):
        return F.cross_entropy(functional_call(model, params, (xi.unsqueeze(0),)), yi.unsqueeze(0))

    per_sample = vmap(grad(sample_loss), in_dims=(None, 0, 0))

    def with_vmap():
        return per_sample(params, x, y)

    def with_loop():
        out = {name: torch.empty(batch, *p.shape, device=device) for name, p in params.items()}
        for i in range(batch):
            model.zero_grad(set_to_none=True)
            F.cross_entropy(model(x[i:i + 1]), y[i:i + 1]).backward()
            for name, p in model.named_parameters():
                out[name][i] = p.grad
        return out

    a, b = with_vmap(), with_loop()
    worst = max((a[n] - b[n]).abs().max().item() for n in a)
    times = compare({"vmap": with_vmap, "loop": with_loop}, device, rounds, 0.0)
    (v_med, v_best), (l_med, l_best) = times["vmap"], times["loop"]
    print(f"\nPer-sample gradients of all {sum(p.numel() for p in params.values()):,} parameters, "
          f"batch {batch} (largest difference vmap vs loop {worst:.1e})")
    print("| method | median (ms) | best (ms) | loop / this (median) |")
    print("|---|--:|--:|--:|")
    print(f"| vmap(grad) + functional_call | {v_med * 1e3:.1f} | {v_best * 1e3:.1f} | {l_med / v_med:.1f} |")
    print(f"| Python loop of {batch} backward passes | {l_med * 1e3:.1f} | {l_best * 1e3:.1f} | 1.0 |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 512, 4096])
    parser.add_argument("--rounds", type=int, default=9, help="interleaved rounds (default 9)")
    parser.add_argument("--min-seconds", type=float, default=0.2,
                        help="length of one timed round (default 0.2)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice, one per core)")
    parser.add_argument("--quick", action="store_true", help="batch 64 only, 2 rounds: a smoke run")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.batches, args.rounds, args.min_seconds = [64], 2, 0.02
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available here")
    device = torch.device(args.device)
    if device.type == "cpu":
        # Compile in this process: a pool of compile workers left running competes with the
        # timed steps for a small CPU's cores.
        torch._inductor.config.compile_threads = 1
    name = torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"torch {torch.__version__}, device {device} ({name}), threads {torch.get_num_threads()}, "
          f"{args.rounds} interleaved rounds of {args.min_seconds} s")
    step_table(device, args.batches, args.rounds, args.min_seconds)
    per_sample_table(device, 512, max(args.rounds // 3, 1))


if __name__ == "__main__":
    main()
