"""Checks of any autograd Function: against a reference torch op (``check_function``), and
backward against finite differences of forward (``check_gradcheck``), in course terms.
"""

import torch

from .autograd import is_function_class, shape_hint
from .report import Report, compare, raised


def check_function(fn, reference, shapes=((3, 4),), seed: int = 0) -> Report:
    """Check an element-wise autograd ``Function`` against a reference torch op.

    Compares the output and the gradient of every input with ``reference`` (e.g. ``torch.tanh``),
    then runs ``torch.autograd.gradcheck``. ``shapes`` gives one shape per input of ``fn``.
    """
    name = getattr(fn, "__name__", "function")
    report = Report(f"check_function({name})")
    g = torch.Generator().manual_seed(seed)
    inputs = []
    for shape in shapes:
        t = torch.randn(shape, generator=g, dtype=torch.float64)
        inputs.append(torch.where(t.abs() < 0.05, t + 0.1, t).requires_grad_())  # away from kinks at 0
    ref_inputs = [t.detach().clone().requires_grad_() for t in inputs]
    call = fn.apply if is_function_class(fn) else fn
    try:
        out = call(*inputs)
    except Exception as e:
        return raised(report, "forward", e)
    expected = reference(*ref_inputs)
    if not compare("forward", out, expected, report):
        return report
    grad_output = torch.randn(expected.shape, generator=g, dtype=torch.float64)
    expected.backward(grad_output)
    names = [f"the gradient of input {i}" for i in range(len(inputs))]
    try:
        out.backward(grad_output)
        for i, (t, r) in enumerate(zip(inputs, ref_inputs)):
            compare(f"gradient of input {i}", t.grad, r.grad, report)
        ok = torch.autograd.gradcheck(call, [t.detach().clone().requires_grad_() for t in inputs],
                                      raise_exception=False)
    except Exception as e:
        return raised(report, "backward", e, names)
    report.add("gradcheck", ok, "finite differences agree with backward" if ok else
               "finite differences disagree with backward: check the derivative")
    return report


def check_gradcheck(fn, inputs, names=None, seed: int = 0) -> Report:
    """``torch.autograd.gradcheck`` in course terms: backward against finite differences of forward.

    For each input that requires a gradient, the derivative of ``<v, fn(inputs)>`` (``v`` random)
    along two random directions is computed from ``fn``'s backward and by central differences of
    its forward; a disagreement names the input and the error instead of printing two Jacobians.
    ``inputs`` are float64 tensors.
    """
    names = list(names or [f"input {i}" for i in range(len(inputs))])
    report = Report(f"check_gradcheck({getattr(fn, '__name__', 'function')})")
    call = fn.apply if is_function_class(fn) else fn
    leaves = [t.detach().clone().requires_grad_(t.requires_grad) for t in inputs]
    g = torch.Generator().manual_seed(seed)
    try:
        out = call(*leaves)
        v = torch.randn(out.shape, generator=g, dtype=out.dtype)
        analytic = iter(torch.autograd.grad((out * v).sum(), [t for t in leaves if t.requires_grad],
                                            allow_unused=True))
        values = [t.detach() for t in leaves]
        for i, (name, leaf) in enumerate(zip(names, leaves)):
            if leaf.requires_grad:
                _add_gradcheck_line(report, name, next(analytic), values[i].shape,
                                    lambda grad, i=i: _directional_error(
                                        lambda *xs: (call(*xs) * v).sum().item(), values, i, grad, g))
    except Exception as e:
        return raised(report, "backward", e, [f"grad_{n}" for n in names])
    return report


def _add_gradcheck_line(report: Report, name: str, grad, shape, error_of) -> None:
    if grad is None:
        report.add(name, False, "backward returned None for it, but it requires a gradient")
        return
    if grad.shape != shape:
        report.add(name, False, f"gradient of shape {tuple(grad.shape)}, expected {tuple(shape)}"
                   f"{shape_hint(tuple(grad.shape), tuple(shape))}")
        return
    err, exact, numeric = error_of(grad)
    if err <= 1e-5 + 1e-3 * abs(numeric):  # gradcheck's tolerances
        report.add(name, True, f"backward agrees with finite differences, largest error {err:.1e}")
    else:
        report.add(name, False, f"backward disagrees with finite differences of forward by {err:.3g} "
                   f"(derivative along a random direction: {exact:.4g} from backward, {numeric:.4g} "
                   "from forward): check its derivative")


FD_EPS = 1e-6  # the central difference's step along a random direction


def _directional_error(scalar, values: list, i: int, grad, g) -> tuple:
    """``(error, from backward, from forward)``, the worst of two random directions of input ``i``:
    ``<grad, u>`` against the central difference of ``scalar`` along ``u``."""
    worst = (0.0, 0.0, 0.0)
    for _ in range(2):
        u = torch.randn(values[i].shape, generator=g, dtype=values[i].dtype)
        ends = [scalar(*values[:i], values[i] + sign * FD_EPS * u, *values[i + 1:]) for sign in (1, -1)]
        numeric, exact = (ends[0] - ends[1]) / (2 * FD_EPS), (grad * u).sum().item()
        if abs(exact - numeric) >= worst[0]:
            worst = (abs(exact - numeric), exact, numeric)
    return worst
