"""Checks of a student's ``nn.Module`` (lesson 10): an MLP built from the course's layers, and an
RMS normalisation with a learned gain."""

import torch

from ..layers import Linear, ScaledReLU
from .report import Report, compare, raised, random_float64


def check_mlp(fn, scale: float = 0.5) -> Report:
    """Check ``fn(sizes)`` returns ``nn.Sequential(Linear, ScaledReLU(scale), ..., Linear)``.

    The layers are ``course_lib.layers.Linear`` with widths ``sizes`` (input first), with a
    ``ScaledReLU`` between each pair and none after the last layer.
    """
    def describe(m):
        if isinstance(m, Linear):
            return f"Linear({m.in_features}, {m.out_features})"
        if isinstance(m, torch.nn.Linear):
            return f"nn.Linear({m.in_features}, {m.out_features})"
        if isinstance(m, ScaledReLU):
            return f"ScaledReLU({m.scale:g})"
        return type(m).__name__

    report = Report("check_mlp")
    for sizes in ([6, 5, 4, 2], [3, 1]):
        label = "sizes " + "-".join(map(str, sizes))
        expected = [f"Linear({a}, {b})" for a, b in zip(sizes, sizes[1:])]
        for i in range(len(expected) - 1, 0, -1):  # an activation between each pair of layers
            expected.insert(i, f"ScaledReLU({scale:g})")
        try:
            with torch.random.fork_rng(devices=[]):
                model = fn(list(sizes))
        except Exception as e:
            raised(report, label, e)
            continue
        if not isinstance(model, torch.nn.Sequential):
            report.add(label, False, f"returned {type(model).__name__}, expected an nn.Sequential")
            continue
        got = [describe(m) for m in model]
        hint = " Use course_lib's Linear, not nn.Linear." if any("nn." in d for d in got) else ""
        report.add(label, got == expected, ", ".join(got) if got == expected else
                   f"got [{', '.join(got)}], expected [{', '.join(expected)}].{hint}")
        try:
            with torch.no_grad():
                shape = tuple(model(torch.zeros(7, sizes[0])).shape)
        except Exception as e:
            raised(report, f"output shape ({label})", e)
            continue
        report.add(f"output shape ({label})", shape == (7, sizes[-1]),
                   f"{shape}" + ("" if shape == (7, sizes[-1]) else f", expected {(7, sizes[-1])}"))
    return report


def check_rms_norm(cls, features: int = 5, eps: float = 1e-6) -> Report:
    """Check ``cls(features)`` is an ``nn.Module`` computing ``x / sqrt(mean(x^2) + eps) * gain``
    over the last dimension, with ``gain`` a registered parameter of shape ``(features,)``
    starting at ones, that training can move."""
    report = Report("check_rms_norm")
    try:
        module = cls(features).double()
    except Exception as e:
        return raised(report, "construction", e)
    params = dict(module.named_parameters())
    shapes = {n: tuple(p.shape) for n, p in params.items()}
    ok = len(params) == 1 and list(shapes.values()) == [(features,)]
    report.add("parameters", ok, f"{shapes}" if ok else f"got {shapes or 'none'}: register one "
               f"nn.Parameter of shape ({features},) (a plain tensor is invisible to optimisers)")
    if not ok:
        return report
    (gain,) = params.values()
    report.add("starts at ones", bool(torch.all(gain == 1)), "gain is all ones" if torch.all(gain == 1)
               else "initialise the gain to ones, so the module starts as a plain normalisation")
    x, new_gain = random_float64((2, 3, features), (features,), seed=1)
    with torch.no_grad():
        gain.copy_(new_gain)
    try:
        out = module(x)
    except Exception as e:
        return raised(report, "forward", e)
    expected = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps) * new_gain
    if compare("output (3-D input)", out, expected, report,
               hint="Normalise over the last dimension only (keepdim=True), then multiply by gain."):
        if out.requires_grad:
            out.sum().backward()
        moved = gain.grad is not None and bool(gain.grad.abs().sum() > 0)
        report.add("gradient reaches gain", moved, "yes" if moved else "gain.grad is empty: "
                   "compute the output from the parameter itself, not a detached copy")
    return report
