"""The report every check returns, and the checks of the Linear layer, the gallery and SGD."""

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

TOLERANCE = {"rtol": 1e-6, "atol": 1e-8}  # the checks run in float64


@dataclass
class Line:
    name: str
    passed: bool
    detail: str


@dataclass
class Report:
    """The outcome of one check: a title and one line per item checked."""

    title: str
    lines: list = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.lines) and all(line.passed for line in self.lines)

    def __bool__(self) -> bool:
        return self.passed

    def add(self, name: str, passed: bool, detail: str = "") -> None:
        self.lines.append(Line(name, passed, detail))

    def failed_names(self) -> list:
        return [line.name for line in self.lines if not line.passed]

    def __str__(self) -> str:
        n_ok = sum(line.passed for line in self.lines)
        verdict = "all correct" if self.passed else f"{n_ok} of {len(self.lines)} correct"
        width = max((len(line.name) for line in self.lines), default=0)
        rows = [f"{self.title}: {verdict}"]
        for line in self.lines:
            mark = "PASS" if line.passed else "FAIL"
            rows.append(f"  {mark}  {line.name:<{width}}  {line.detail}".rstrip())
        return "\n".join(rows)

    __repr__ = __str__

    def raise_if_failed(self) -> "Report":
        if not self.passed:
            raise AssertionError("\n" + str(self))
        return self


def compare(name: str, got, expected: torch.Tensor, report: Report, hint: str = "") -> bool:
    """Add one line to ``report`` comparing a student's tensor with the expected one."""
    shape = tuple(expected.shape)
    if got is None:
        report.add(name, False, f"returned None, expected a tensor of shape {shape}. {hint}".strip())
        return False
    if not isinstance(got, torch.Tensor):
        report.add(name, False, f"returned {type(got).__name__}, expected a tensor of shape {shape}")
        return False
    if tuple(got.shape) != shape:
        detail = f"shape {tuple(got.shape)}, expected {shape}"
        if tuple(got.shape) == shape[::-1] and len(shape) == 2:
            detail += " (transposed?)"
        report.add(name, False, f"{detail}. {hint}".strip())
        return False
    got64, exp64 = got.detach().to(torch.float64), expected.detach().to(torch.float64)
    if not torch.isfinite(got64).all():
        report.add(name, False, f"shape {shape}, but it contains NaN or inf")
        return False
    err = (got64 - exp64).abs()
    largest = err.max().item() if err.numel() else 0.0
    ok = torch.allclose(got64, exp64, **TOLERANCE)
    if ok:
        report.add(name, True, f"shape {shape}, largest error {largest:.1e}")
    else:
        where = tuple(int(i) for i in torch.unravel_index(err.argmax(), err.shape))
        report.add(name, False, f"shape {shape}, largest error {largest:.3g} at index {where}. {hint}".strip())
    return ok


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


def _is_function_class(fn) -> bool:
    return isinstance(fn, type) and issubclass(fn, torch.autograd.Function)


def check_linear_forward(fn, seed: int = 0) -> Report:
    """Check ``fn(input, weight, bias)`` (or ``fn.apply``) computes ``input @ weight + bias``."""
    report = Report("check_linear_forward")
    call = fn.apply if _is_function_class(fn) else fn
    for case, x, w, b in _linear_cases(seed):
        expected = F.linear(x, w.t(), b)
        try:
            got = call(x, w, b)
        except Exception as e:  # report, don't crash the notebook
            report.add(f"output ({case})", False, f"raised {type(e).__name__}: {e}")
            continue
        compare(f"output ({case})", got, expected, report,
                hint="" if b is not None else "Remember the bias is optional (None).")
    return report


GRAD_HINTS = {
    "grad_input": "Expected grad_output @ weight.T, shape (batch, in_features).",
    "grad_weight": "Expected input.T @ grad_output, shape (in_features, out_features) like weight.",
    "grad_bias": "Expected grad_output summed over the batch, shape (out_features,).",
}


def check_linear_backward(fn, seed: int = 0) -> Report:
    """Check the three gradients of a Linear layer against autograd, each reported separately.

    ``fn`` is either an autograd ``Function`` class used as ``fn.apply(input, weight, bias)``, or
    a plain ``backward(grad_output, input, weight, bias) -> (grad_input, grad_weight, grad_bias)``.
    """
    report = Report("check_linear_backward")
    for case, x, w, b in _linear_cases(seed):
        leaves = [t.clone().requires_grad_() if t is not None else None for t in (x, w, b)]
        ref = F.linear(leaves[0], leaves[1].t(), leaves[2])
        g = torch.Generator().manual_seed(seed + 1)
        grad_output = torch.randn(ref.shape, generator=g, dtype=torch.float64)
        ref.backward(grad_output)
        expected = [t.grad if t is not None else None for t in leaves]
        try:
            got = _student_grads(fn, grad_output, x, w, b)
        except Exception as e:
            report.add(f"backward ({case})", False, f"raised {type(e).__name__}: {e}")
            continue
        for name, gv, ev in zip(("grad_input", "grad_weight", "grad_bias"), got, expected):
            label = f"{name} ({case})"
            if ev is None:
                ok = gv is None
                report.add(label, ok, "None, as there is no bias" if ok else
                           "expected None when there is no bias")
            else:
                compare(label, gv, ev, report, hint=GRAD_HINTS[name])
    return report


def _student_grads(fn, grad_output, x, w, b):
    if _is_function_class(fn):
        leaves = [t.clone().requires_grad_() if t is not None else None for t in (x, w, b)]
        out = fn.apply(*leaves)
        out.backward(grad_output)
        return [t.grad if t is not None else None for t in leaves]
    grads = fn(grad_output.clone(), x.clone(), w.clone(), None if b is None else b.clone())
    if not isinstance(grads, (tuple, list)) or len(grads) != 3:
        raise TypeError("backward must return a tuple (grad_input, grad_weight, grad_bias)")
    return list(grads)


def check_function(fn, reference, shapes=((3, 4),), seed: int = 0, positive: bool = False) -> Report:
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
        t = torch.where(t.abs() < 0.05, t + 0.1, t)  # keep away from kinks at 0
        inputs.append((t.abs() if positive else t).requires_grad_())
    ref_inputs = [t.detach().clone().requires_grad_() for t in inputs]
    call = fn.apply if _is_function_class(fn) else fn
    try:
        out = call(*inputs)
    except Exception as e:
        report.add("forward", False, f"raised {type(e).__name__}: {e}")
        return report
    expected = reference(*ref_inputs)
    if not compare("forward", out, expected, report):
        return report
    grad_output = torch.randn(expected.shape, generator=g, dtype=torch.float64)
    expected.backward(grad_output)
    try:
        out.backward(grad_output)
    except Exception as e:
        report.add("backward", False, f"raised {type(e).__name__}: {e}")
        return report
    for i, (t, r) in enumerate(zip(inputs, ref_inputs)):
        compare(f"gradient of input {i}", t.grad, r.grad, report)
    try:
        ok = torch.autograd.gradcheck(call, [t.detach().clone().requires_grad_() for t in inputs],
                                      raise_exception=False)
    except Exception as e:
        ok = False
        report.add("gradcheck", False, f"raised {type(e).__name__}: {e}")
        return report
    report.add("gradcheck", ok, "finite differences agree with backward" if ok else
               "finite differences disagree with backward: check the derivative")
    return report


def check_sgd_step(before: dict, after: dict, grads: dict, lr: float) -> Report:
    """Check every parameter took exactly one SGD step: ``after = before - lr * grad``.

    All three arguments map parameter names to tensors (copies taken before and after the step,
    and the gradients used). Catches a parameter stepped twice, or never.
    """
    report = Report("check_sgd_step")
    for name in before:
        b, a = before[name].detach(), after[name].detach()
        grad = grads.get(name)
        if grad is None:
            report.add(name, False, "no gradient given for this parameter")
            continue
        expected = b - lr * grad
        if torch.allclose(a, expected, rtol=1e-5, atol=1e-7):
            report.add(name, True, "stepped once")
        elif torch.allclose(a, b) and grad.abs().max() > 0:
            report.add(name, False, "unchanged: this parameter was never stepped")
        elif torch.allclose(a, b - 2 * lr * grad, rtol=1e-5, atol=1e-7):
            report.add(name, False, "stepped twice: look for a repeated update line")
        else:
            err = (a - expected).abs().max().item()
            report.add(name, False, f"differs from before - lr * grad by up to {err:.3g}")
    return report


def check_accuracy(accuracy: float, threshold: float, what: str = "test accuracy") -> Report:
    """Check an accuracy (a fraction in [0, 1]) reaches ``threshold``."""
    report = Report("check_accuracy")
    ok = 0.0 <= accuracy <= 1.0 and accuracy >= threshold
    report.add(what, ok, f"{accuracy:.2%}, needed at least {threshold:.2%}")
    return report


def _raised(report: Report, name: str, e: Exception) -> Report:
    report.add(name, False, f"raised {type(e).__name__}: {e}")
    return report
