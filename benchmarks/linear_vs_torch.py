"""Forward+backward time of ``course_lib.layers.Linear``'s Function against ``F.linear``, side by side.

"ours" is ``fast.linear``, what ``Linear`` runs (the production ``FastLinear``; the plain
``Linear_Layer`` a student reads is not timed here). Before the timings, the counted cost of one
forward + backward (aten operators dispatched, Python functions entered) against the budget in
``course_lib.fast``: those counts are the same on every run, the timings are not.

Two tables, each measured in one run with the two contenders interleaved round by round (so a
noisy neighbour slows both alike); the median and the best round are reported, and the extra
time per call (ours minus torch, medians):

1. One layer, forward + backward, at the course's shapes. As in ``NeuralNet``, the 784->128 layer's
   input needs no gradient (it is the data); the inner layers' inputs do.
2. A whole ``NeuralNet`` training step (forward, cross-entropy, backward, SGD step) against the
   same network built from ``torch.nn.Linear`` with identical weights.

With ``--old REV`` (a commit of this repository, e.g. 3469d90, before the Function moved to
``setup_context``), REV's ``Linear_Layer`` is timed in the same rounds as a third contender, and a
third table compares ours with it: on a machine whose speed is not the one a target was set on,
"as fast as REV" is the comparison that does not depend on the machine.

With ``--floor``, ``FloorLinear`` is timed in the same rounds too: the least a Python
``autograd.Function`` can do for this layer (the same aten calls as ours, no checks, no autocast,
everything saved). Its extra time over ``F.linear`` is what any Python Function pays on this
machine (creating its context, the calls into Python for forward and backward); ours minus it is
what our checks and features cost.

Usage:
    python benchmarks/linear_vs_torch.py [--device cpu|cuda] [--rounds 25] [--quick] [--batches 64 512]
                                         [--old 3469d90] [--floor]
"""

import argparse
import pathlib
import platform
import subprocess
import types

import torch
import torch.nn.functional as F
from timing import compare
from torch import nn

from course_lib import Linear, NeuralNet, fast
from course_lib.counting import count_calls

SHAPES = [(784, 128), (128, 64), (64, 10)]
BATCHES = [64, 512, 4096]


class FloorLinear(torch.autograd.Function):
    """The least a Python Function can do for ``X W + b`` with a column-major ``W``: a yardstick,
    not a layer (no checks, no autocast, no bias-free case, both tensors always saved; only the
    gradients autograd asks for are computed, as ours computes them)."""

    @staticmethod
    def forward(ctx, x, w, b):
        ctx.save_for_backward(x, w)
        return torch.addmm(b, x, w)

    @staticmethod
    def backward(ctx, grad):
        x, w = ctx.saved_tensors
        needs_x, needs_w, needs_b = ctx.needs_input_grad  # only what is asked for, as ours
        return (grad.mm(w.T) if needs_x else None, grad.T.mm(x).T if needs_w else None,
                grad.sum(0) if needs_b else None)


def layer_step(linear, x, w, b, grad):
    def step():
        w.grad = b.grad = x.grad = None
        out = linear(x, w, b)
        out.backward(grad)
    return step


def load_old_linear(rev):
    """``Linear_Layer.apply`` as it was at commit ``rev`` (its functions.py, loaded on its own)."""
    root = pathlib.Path(__file__).resolve().parent.parent
    shown = subprocess.run(["git", "show", f"{rev}:course_lib/functions.py"], cwd=root,
                           capture_output=True, text=True)
    if shown.returncode != 0:
        raise SystemExit(f"--old {rev}: git cannot show course_lib/functions.py at that commit: "
                         f"{shown.stderr.strip()}")
    module = types.ModuleType(f"functions_at_{rev}")
    exec(compile(shown.stdout, f"{rev}:course_lib/functions.py", "exec"), module.__dict__)
    return module.Linear_Layer.apply


def layer_table(device, rounds, min_seconds, batches, old=None, floor=False):
    rows, old_rows, floor_rows = [], [], []
    for batch in batches:
        for in_f, out_f in SHAPES:
            torch.manual_seed(0)
            ours = Linear(in_f, out_f, device=device)  # weight (in, out)
            theirs = ours.to_torch()  # the same numbers, weight (out, in)
            x = torch.randn(batch, in_f, device=device)
            x.requires_grad_(in_f != 784)  # the first layer's input is data
            grad = torch.randn(batch, out_f, device=device)
            contenders = {
                "ours": layer_step(fast.linear, x, ours.weight, ours.bias, grad),
                "torch": layer_step(F.linear, x, theirs.weight, theirs.bias, grad),
            }
            if old is not None:
                contenders["old"] = layer_step(old, x, ours.weight, ours.bias, grad)
            if floor:
                contenders["floor"] = layer_step(FloorLinear.apply, x, ours.weight, ours.bias, grad)
            times = compare(contenders, device, rounds, min_seconds)
            rows.append((f"{in_f}->{out_f}", batch, times["ours"], times["torch"]))
            if old is not None:
                old_rows.append((f"{in_f}->{out_f}", batch, times["ours"], times["old"]))
            if floor:
                floor_rows.append((f"{in_f}->{out_f}", batch, times["floor"], times["torch"], times["ours"]))
    return rows, old_rows, floor_rows


def train_step(model, x, y):
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    return step


def with_old_layers(model, old):
    """``model`` with each ``Linear`` running ``old`` (REV's ``Linear_Layer.apply``) instead."""
    for layer in (model.fc1, model.fc2, model.fc3):
        layer.forward = lambda x, layer=layer: old(x, layer.weight, layer.bias)
    return model


def network_table(device, rounds, min_seconds, batches, old=None):
    rows, old_rows = [], []
    for batch in batches:
        torch.manual_seed(0)
        ours = NeuralNet(128).to(device)
        theirs = nn.Sequential(
            ours.fc1.to_torch(), nn.ReLU(), ours.fc2.to_torch(), nn.ReLU(), ours.fc3.to_torch()
        ).to(device)
        g = torch.Generator().manual_seed(1)
        x = torch.randn(batch, 784, generator=g).to(device)
        y = torch.randint(0, 10, (batch,), generator=g).to(device)
        contenders = {"ours": train_step(ours, x, y), "torch": train_step(theirs, x, y)}
        if old is not None:
            torch.manual_seed(0)
            contenders["old"] = train_step(with_old_layers(NeuralNet(128).to(device), old), x, y)
        times = compare(contenders, device, rounds, min_seconds)
        rows.append(("NeuralNet step", batch, times["ours"], times["torch"]))
        if old is not None:
            old_rows.append(("NeuralNet step", batch, times["ours"], times["old"]))
    return rows, old_rows


def print_table(title, rows, other="torch"):
    print(f"\n{title}")
    print(f"| case | batch | ours median (us) | {other} median (us) | ratio of medians "
          f"| ours best (us) | {other} best (us) | ratio of best | extra per call (us) |")
    print("|---|--:|--:|--:|--:|--:|--:|--:|--:|")
    for case, batch, (ours_med, ours_best), (theirs_med, theirs_best) in rows:
        print(f"| {case} | {batch} | {ours_med * 1e6:.1f} | {theirs_med * 1e6:.1f} | "
              f"{ours_med / theirs_med:.3f} | {ours_best * 1e6:.1f} | {theirs_best * 1e6:.1f} | "
              f"{ours_best / theirs_best:.3f} | {(ours_med - theirs_med) * 1e6:+.1f} |")


def print_floor_table(rows):
    print("\nThe same rounds: the least Python autograd.Function (FloorLinear) against F.linear, and ours against it")
    print("| case | batch | floor median (us) | torch median (us) | floor extra over torch (us) "
          "| ours median (us) | ours extra over floor (us) |")
    print("|---|--:|--:|--:|--:|--:|--:|")
    for case, batch, (floor_med, _), (torch_med, _), (ours_med, _) in rows:
        print(f"| {case} | {batch} | {floor_med * 1e6:.1f} | {torch_med * 1e6:.1f} | "
              f"{(floor_med - torch_med) * 1e6:+.1f} | {ours_med * 1e6:.1f} | {(ours_med - floor_med) * 1e6:+.1f} |")


def print_counts(device):
    """The counted cost of one 128->64 forward + backward at batch 64, and the budget."""
    torch.manual_seed(0)
    ours = Linear(128, 64, device=device)
    theirs = ours.to_torch()
    x = torch.randn(64, 128, device=device, requires_grad=True)
    grad = torch.randn(64, 64, device=device)
    mine = count_calls(layer_step(fast.linear, x, ours.weight, ours.bias, grad))
    base = count_calls(layer_step(F.linear, x, theirs.weight, theirs.bias, grad))
    print("\nCounted per forward + backward, 128->64 at batch 64 (the same on every run)")
    print("| | fast.linear | F.linear | extra | budget for extra |")
    print("|---|--:|--:|--:|--:|")
    print(f"| aten operators dispatched | {len(mine.aten_ops)} | {len(base.aten_ops)} | "
          f"{len(mine.aten_ops) - len(base.aten_ops):+d} | {fast.BUDGET_EXTRA_ATEN_OPS:+d} |")
    print(f"| Python functions entered | {mine.python_calls} | {base.python_calls} | "
          f"{mine.python_calls - base.python_calls:+d} | {fast.BUDGET_EXTRA_CALLS:+d} |")
    print(f"| of them course_lib's own | {len(mine.own_calls)} | {len(base.own_calls)} | "
          f"{len(mine.own_calls) - len(base.own_calls):+d} | {fast.BUDGET_OWN_CALLS:+d} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--rounds", type=int, default=25, help="interleaved rounds per case (default 25)")
    parser.add_argument("--min-seconds", type=float, default=0.05,
                        help="length of one timed round (default 0.05)")
    parser.add_argument("--quick", action="store_true", help="3 rounds of 0.02 s, for a smoke run")
    parser.add_argument("--batches", type=int, nargs="+", default=BATCHES,
                        help=f"batch sizes (default {' '.join(map(str, BATCHES))})")
    parser.add_argument("--old", metavar="REV",
                        help="also time Linear_Layer as it was at this commit (e.g. 3469d90)")
    parser.add_argument("--floor", action="store_true",
                        help="also time FloorLinear, the least a Python autograd.Function can do")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.min_seconds = 3, 0.02
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available here")
    device = torch.device(args.device)
    name = torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"torch {torch.__version__}, device {device} ({name}), threads {torch.get_num_threads()}, "
          f"{args.rounds} interleaved rounds of {args.min_seconds} s each")
    print_counts(device)
    old = load_old_linear(args.old) if args.old else None
    rows, old_rows, floor_rows = layer_table(device, args.rounds, args.min_seconds, args.batches, old, args.floor)
    print_table("One layer, forward + backward per step", rows)
    if old is not None:
        print_table(f"The same rounds: ours against Linear_Layer at {args.old}", old_rows, args.old)
    if args.floor:
        print_floor_table(floor_rows)
    rows, old_rows = network_table(device, args.rounds, args.min_seconds, args.batches, old)
    print_table("Whole training step (forward, cross-entropy, backward, SGD with momentum)", rows)
    if old is not None:
        print_table(f"The same rounds: ours against NeuralNet with Linear_Layer at {args.old}",
                    old_rows, args.old)


if __name__ == "__main__":
    main()
