"""Checks for the exercises of lesson 11 (training on several processes)."""

import torch
import torch.nn.functional as F

from .report import TOLERANCE, Report, raised


def _shards(seed: int, sizes):
    """A random linear model and a batch split into shards of ``sizes`` rows, in float64; each
    shard's gradient of its own loss (mean or sum), and the whole batch's."""
    g = torch.Generator().manual_seed(seed)
    n = sum(sizes)
    x, y = torch.randn(n, 5, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g)
    w = torch.randn(5, 3, generator=g, dtype=torch.float64, requires_grad=True)

    def grad(rows, reduction):
        return torch.autograd.grad(F.cross_entropy(x[rows] @ w, y[rows], reduction=reduction), w)[0]

    bounds = torch.tensor([0, *sizes]).cumsum(0).tolist()
    parts = [slice(a, b) for a, b in zip(bounds, bounds[1:])]
    return {reduction: ([grad(p, reduction) for p in parts], grad(slice(0, n), reduction))
            for reduction in ("mean", "sum")}


def check_combine_gradients(fn, seed: int = 0) -> Report:
    """Check ``fn(grads, sizes, reduction)`` turns the shards' gradients into the whole batch's.

    ``grads[r]`` is the gradient of shard ``r``'s own loss over its ``sizes[r]`` samples, with
    ``reduction`` ``"mean"`` (cross-entropy's default) or ``"sum"``; the answer must equal the
    gradient of the same loss over the whole batch.
    """
    report = Report("check_combine_gradients")
    for sizes in ((4, 4), (5, 3), (6, 1, 3)):
        cases = _shards(seed, sizes)
        for reduction, (grads, expected) in cases.items():
            label = f"{reduction} loss, shards of {'+'.join(map(str, sizes))} rows"
            try:
                got = fn([g.clone() for g in grads], list(sizes), reduction)
            except Exception as e:
                raised(report, label, e)
                continue
            if not isinstance(got, torch.Tensor) or got.shape != expected.shape:
                shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
                report.add(label, False, f"returned {shape}, expected a tensor of shape {tuple(expected.shape)}")
                continue
            ok = torch.allclose(got.double(), expected, **TOLERANCE)
            report.add(label, ok, "equals the whole batch's gradient" if ok else
                       _combine_hint(got.double(), grads, sizes, reduction))
    return report


def _combine_hint(got, grads, sizes, reduction) -> str:
    """Name the usual mistakes: a plain average of the shards, or a plain sum."""
    if torch.allclose(got, sum(grads) / len(grads), **TOLERANCE):
        return ("that is the plain average of the shards' gradients (DDP's default): it is right "
                "only when every shard has as many rows, and for a mean loss")
    if torch.allclose(got, sum(grads), **TOLERANCE):
        return (f"that is the plain sum: for a {reduction} loss each shard's gradient already "
                "carries its own 1/n_r; what should it carry for the whole batch?")
    return "not the whole batch's gradient: write the batch's loss as a sum over rows, then group the rows by shard"


def check_shard_bounds(fn) -> Report:
    """Check ``fn(n, world_size, rank) -> (start, stop)``: contiguous shares that cover ``range(n)``
    once, in rank order, with sizes that differ by at most one."""
    report = Report("check_shard_bounds")
    for n, world in ((8, 2), (10, 4), (3, 4), (0, 2), (128, 3)):
        label = f"n={n}, world_size={world}"
        try:
            bounds = [tuple(int(v) for v in fn(n, world, rank)) for rank in range(world)]
        except Exception as e:
            raised(report, label, e)
            continue
        covered = [i for start, stop in bounds for i in range(start, stop)]
        sizes = [stop - start for start, stop in bounds]
        if covered != list(range(n)):
            report.add(label, False, f"shares {bounds} do not cover 0..{n - 1} exactly once, in "
                                     "order: each share must start where the previous one stopped")
        elif max(sizes) - min(sizes) > 1:
            report.add(label, False, f"shares {bounds} have sizes {sizes}: make them differ by at "
                                     "most one, or one process waits for the others every step")
        else:
            report.add(label, True, f"sizes {sizes}")
    return report
