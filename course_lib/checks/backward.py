"""Checks of a backward written by hand, against autograd (lessons 2 and 4).

One operation's backward (``check_backward``), the Linear layer's in ``nn.Linear``'s layout, and
a two-layer ReLU network's gradients. A wrong gradient that is off by a constant factor (the sign,
2, N, 1/N) or computed in the wrong dtype is named as such.
"""

import math

import torch
import torch.nn.functional as F

from .report import Report, compare, raised, random_float64


def check_backward(fn, forward, shapes=((3, 4),), wrt=(0,), seed: int = 0) -> Report:
    """Check a hand-written backward ``fn(grad_output, *inputs)`` against autograd on ``forward``.

    ``forward(*inputs)`` is the operation (e.g. ``torch.relu``, or ``F.mse_loss`` with inputs
    ``(prediction, target)``). ``fn`` returns ``dL/d input`` for each index in ``wrt`` given
    ``grad_output = dL/d output``: one tensor when ``wrt`` has one index, else a tuple.
    """
    report = Report(f"check_backward({getattr(fn, '__name__', 'backward')})")
    g = torch.Generator().manual_seed(seed)
    inputs = []
    for shape in shapes:
        t = torch.randn(shape, generator=g, dtype=torch.float64)
        inputs.append(torch.where(t.abs() < 0.05, t + 0.1, t))  # keep away from kinks at 0
    leaves = [t.clone().requires_grad_(i in wrt) for i, t in enumerate(inputs)]
    output = forward(*leaves)
    grad_output = torch.randn(output.shape, generator=g, dtype=torch.float64)
    expected = torch.autograd.grad(output, [leaves[i] for i in wrt], grad_output)
    try:
        got = fn(grad_output.clone(), *(t.clone() for t in inputs))
    except Exception as e:
        return raised(report, "backward", e)
    if len(wrt) == 1:
        got = (got,)
    if not isinstance(got, (tuple, list)) or len(got) != len(wrt):
        report.add("backward", False, f"expected a tuple of {len(wrt)} gradients, got {type(got).__name__}")
        return report
    for i, gv, ev in zip(wrt, got, expected):
        _compare_gradient(f"gradient of input {i}", gv, ev, report)
    return report


def _factor_hint(got: torch.Tensor, expected: torch.Tensor) -> str:
    """Name a constant factor between a wrong gradient and the right one (sign, 2, N, 1/N)."""
    mask = expected.abs() > 1e-12
    if got.shape != expected.shape or not mask.any():
        return ""
    ratios = got[mask] / expected[mask]
    c = ratios.mean().item()
    if not torch.allclose(ratios, torch.full_like(ratios, c), rtol=1e-6, atol=1e-9):
        return ""
    n = expected.numel()
    named = [(-1.0, "the sign is flipped"),
             (0.5, "exactly half the expected gradient: a factor 2 is missing "
                   "(d/dp of (p - t)^2 is 2 (p - t))"),
             (2.0, "exactly twice the expected gradient: a factor 2 too many")]
    if n > 2:
        named += [(float(n), f"exactly N = {n} times the expected gradient: the 1/N of the mean "
                             "is missing"),
                  (1.0 / n, f"exactly 1/N = 1/{n} of the expected gradient: divided by N once "
                            "too often")]
    for value, words in named:
        if math.isclose(c, value, rel_tol=1e-6):
            return words
    return f"a constant {c:.4g} times the expected gradient: look for a wrong factor"


def _compare_gradient(name: str, got, expected: torch.Tensor, report: Report) -> None:
    """``compare``, plus: a wrong dtype is named as such, a constant factor is named."""
    if isinstance(got, torch.Tensor) and got.shape == expected.shape and got.dtype != expected.dtype:
        close = torch.allclose(got.detach().to(expected.dtype), expected, rtol=1e-4, atol=1e-6)
        report.add(f"{name} dtype", False, f"{got.dtype}, expected {expected.dtype} like the "
                   "inputs: compute in the inputs' dtype (no .float(), no float32 constants)"
                   + ("; the values are right to float32 precision" if close else ""))
        if close:
            return
    if not compare(name, got, expected, report):
        hint = _factor_hint(got.detach().to(expected.dtype), expected) if (
            isinstance(got, torch.Tensor) and got.is_floating_point()) else ""
        if hint:
            report.lines[-1].detail += f" It is {hint}."


def check_torch_layout_backward(fn, seed: int = 0) -> Report:
    """Check ``fn(grad_output, x, weight, bias) -> (grad_input, grad_weight, grad_bias)`` for
    ``y = x @ weight.T + bias`` with ``nn.Linear``'s layout: weight ``(out, in)``, bias ``(out,)``;
    ``x`` may have any number of leading dimensions; ``bias`` may be ``None``."""
    report = Report("check_torch_layout_backward")
    hints = ("grad_input has x's shape: which product of G and weight gives it?",
             "grad_weight has weight's shape (out, in), and every row of every leading dimension "
             "contributes to it.",
             "grad_bias has shape (out,): which dimensions of G must disappear, and how?")
    for case, shapes, with_bias in [("batch", ((4, 5), (3, 5), (3,)), True),
                                    ("3-D input", ((2, 4, 5), (3, 5), (3,)), True),
                                    ("no bias", ((4, 5), (3, 5), (3,)), False)]:
        x, w, b = random_float64(*shapes, seed=seed)
        b = b if with_bias else None
        leaves = [t.clone().requires_grad_() if t is not None else None for t in (x, w, b)]
        out = F.linear(*leaves)
        g = random_float64(tuple(out.shape), seed=seed + 1)[0]
        out.backward(g)
        try:
            got = fn(g.clone(), x.clone(), w.clone(), None if b is None else b.clone())
            if not isinstance(got, (tuple, list)) or len(got) != 3:
                raise TypeError(f"expected a tuple of 3 gradients, got {type(got).__name__}")
        except Exception as e:
            raised(report, f"backward ({case})", e)
            continue
        for name, gv, leaf, hint in zip(("grad_input", "grad_weight", "grad_bias"), got, leaves, hints):
            if leaf is None:
                report.add(f"{name} ({case})", gv is None, "None, as there is no bias" if gv is None
                           else "expected None when there is no bias")
            else:
                compare(f"{name} ({case})", gv, leaf.grad, report, hint=hint)
    return report


def check_relu_mlp_gradients(fn, seed: int = 0) -> Report:
    """Check ``fn(x, target, w1, b1, w2, b2) -> (gw1, gb1, gw2, gb2)``, the gradients of
    ``L = mse(relu(x @ w1 + b1) @ w2 + b2, target)`` written by hand (run without autograd)."""
    report = Report("check_relu_mlp_gradients")
    tensors = random_float64((6, 4), (6, 2), (4, 5), (5,), (5, 2), (2,), seed=seed)
    leaves = [t.clone().requires_grad_(i >= 2) for i, t in enumerate(tensors)]
    x, target, w1, b1, w2, b2 = leaves
    F.mse_loss(torch.relu(x @ w1 + b1) @ w2 + b2, target).backward()
    try:
        with torch.no_grad():  # by hand: autograd records nothing here
            got = fn(*(t.clone() for t in tensors))
        if not isinstance(got, (tuple, list)) or len(got) != 4:
            raise TypeError(f"expected a tuple of 4 gradients, got {type(got).__name__}")
    except Exception as e:
        return raised(report, "gradients", e)
    hints = {"w1": "Pass the gradient upstream one step at a time: into layer 2's input, through "
                   "the ReLU (what is its derivative where its input is negative?), then to w1.",
             "b1": "It comes from the same gradient as w1's, at the ReLU's input."}
    for name, gv, leaf in zip(("w1", "b1", "w2", "b2"), got, leaves[2:]):
        _compare_gradient(f"dL/d{name}", gv, leaf.grad, report)
        if not report.lines[-1].passed and name in hints:
            report.lines[-1].detail += " " + hints[name]
    return report
