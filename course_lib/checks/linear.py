"""Checks of a Linear layer written by a student: its forward, its three gradients, and its
gradients when some inputs need none (the data of a first layer, a frozen weight).

Each runs on three float64 cases (a batch, a batch of one, no bias) against ``F.linear`` and
autograd, and reports every output and gradient separately.
"""

import torch
import torch.nn.functional as F

from .autograd import is_function_class, run_backward, run_forward
from .report import Report, compare, raised


def _linear_cases(seed: int):
    """(name, input, weight, bias) cases in float64: a batch, a batch of one, no bias."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    return [
        ("batch of 4", r(4, 5), r(5, 3), r(3)),
        ("batch of 1", r(1, 6), r(6, 2), r(2)),
        ("no bias", r(3, 4), r(4, 5), None),
    ]


def check_linear_forward(fn, seed: int = 0) -> Report:
    """Check ``fn(input, weight, bias)`` (or ``fn.apply``) computes ``input @ weight + bias``;
    a Function class without a bias is called as ``fn.apply(input, weight)``."""
    report = Report("check_linear_forward")
    function = is_function_class(fn)
    for case, x, w, b in _linear_cases(seed):
        expected = F.linear(x, w.t(), b)
        try:
            got = fn.apply(*(t for t in (x, w, b) if t is not None)) if function else fn(x, w, b)
        except Exception as e:  # report, don't crash the notebook
            raised(report, f"output ({case})", e)
            continue
        compare(f"output ({case})", got, expected, report,
                hint="" if b is not None else "Remember the bias is optional (None).")
    return report


GRAD_HINTS = {
    "grad_input": "Expected grad_output @ weight.T, shape (B, n_in) like input.",
    "grad_weight": "Expected input.T @ grad_output, shape (n_in, n_out) like weight.",
    "grad_bias": "Expected grad_output summed over the batch, shape (n_out,) like bias.",
}
GRAD_NAMES = ("grad_input", "grad_weight", "grad_bias")


def check_linear_backward(fn, seed: int = 0) -> Report:
    """Check the three gradients of a Linear layer against autograd, each reported separately.

    ``fn`` is either an autograd ``Function`` class, whose backward is called directly (through a
    ``FakeCtx``, so the raw shapes it returns count; without a bias as ``apply(input, weight)``),
    or a plain ``backward(grad_output, input, weight, bias) -> (grad_input, grad_weight, grad_bias)``.
    """
    report = Report("check_linear_backward")
    for case, x, w, b in _linear_cases(seed):
        _check_linear_case(report, fn, (case, (x, w, b), (True, True, b is not None)), seed)
    return report


def check_linear_needs_grad(fn, seed: int = 0) -> Report:
    """Check a Linear ``Function`` class when some inputs need no gradient (the data of a first
    layer, a frozen weight): each needed gradient must be right whatever the others are."""
    report = Report("check_linear_needs_grad")
    (_, x, w, b), (_, x1, w1, _) = _linear_cases(seed)[:2]
    cases = [("input needs no gradient", (x, w, b), (False, True, True)),
             ("weight needs no gradient", (x1, w1, None), (True, False, False))]
    for case in cases:
        _check_linear_case(report, fn, case, seed)
    return report


def _check_linear_case(report: Report, fn, case: tuple, seed: int) -> None:
    """Add the lines of one ``(name, (input, weight, bias), needs_input_grad)`` case: each gradient
    that is needed, compared with autograd's."""
    case, tensors, needs = case
    leaves = [t.clone().requires_grad_(n) if t is not None else None for t, n in zip(tensors, needs)]
    ref = F.linear(leaves[0], leaves[1].t(), leaves[2])
    g = torch.Generator().manual_seed(seed + 1)
    grad_output = torch.randn(ref.shape, generator=g, dtype=torch.float64)
    ref.backward(grad_output)
    try:
        got = _student_grads(fn, grad_output, tensors, needs)
    except Exception as e:
        raised(report, f"backward ({case})", e)
        return
    report_gradients(report, got, leaves, needs, case, GRAD_HINTS)


def report_gradients(report, got, leaves, needs, case, hints=GRAD_HINTS):
    """Report each returned gradient of a Linear backward against autograd's ``leaf.grad``: None
    where there is no bias, any answer where ``needs`` (ctx.needs_input_grad) drops it, and a
    value where it asks for one. ``hints``: ``{name: hint}`` in the order of ``got``."""
    for i, ((name, hint), gv, leaf) in enumerate(zip(hints.items(), got, leaves)):
        label = f"{name} ({case})"
        if leaf is None:
            report.add(label, gv is None, "None, as there is no bias" if gv is None else
                       "expected None when there is no bias")
        elif not needs[i]:
            continue  # autograd drops it: any answer will do
        elif gv is None and not all(needs):
            report.add(label, False, f"returned None, but ctx.needs_input_grad[{i}] is True: "
                       "this gradient is needed (needs_input_grad indices swapped?)")
        else:
            compare(label, gv, leaf.grad, report, hint=hint)


def _student_grads(fn, grad_output, tensors, needs) -> list:
    x, w, b = tensors
    if is_function_class(fn):
        inputs = [t.clone() for t in tensors if t is not None]  # apply(x, w) without a bias
        ctx, _ = run_forward(fn, inputs, needs[:len(inputs)])
        return list(run_backward(fn, ctx, grad_output.clone(), len(inputs))) + [None] * (3 - len(inputs))
    grads = fn(grad_output.clone(), x.clone(), w.clone(), None if b is None else b.clone())
    if not isinstance(grads, (tuple, list)) or len(grads) != 3:
        raise TypeError("backward must return a tuple (grad_input, grad_weight, grad_bias)")
    return list(grads)
