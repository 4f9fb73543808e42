"""The report every check returns, and the checks of the Linear layer, the gallery and SGD."""

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .autograd import explain, is_function_class, run_backward, run_forward, shape_hint

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
        hint_text = shape_hint(tuple(got.shape), shape)
        if hint_text:
            detail += f" ({hint_text[2:]})"
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
    "grad_input": "Expected grad_output @ weight.T, shape (batch, in_features).",
    "grad_weight": "Expected input.T @ grad_output, shape (in_features, out_features) like weight.",
    "grad_bias": "Expected grad_output summed over the batch, shape (out_features,).",
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
    for i, (name, gv, leaf) in enumerate(zip(GRAD_NAMES, got, leaves)):
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
            compare(label, gv, leaf.grad, report, hint=GRAD_HINTS[name])


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
                                    lambda grad: _directional_error(lambda *xs: (call(*xs) * v).sum().item(),
                                                                    values, i, grad, g))
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


def check_sgd_step(before: dict, after: dict, grads: dict, lr: float, returned: dict | None = None) -> Report:
    """Check every parameter took exactly one SGD step: ``after = before - lr * grad``.

    All three arguments map parameter names to tensors (copies taken before and after the step,
    and the gradients used). Catches a parameter stepped twice, or never; with ``returned`` (the
    dict of parameters as the step left it), a parameter replaced by an updated copy instead of
    changed in place.
    """
    report = Report("check_sgd_step")
    for name in before:
        b, a = before[name].detach(), after[name].detach()
        grad = grads.get(name)
        if grad is None:
            report.add(name, False, "no gradient given for this parameter")
            continue
        expected = b - lr * grad
        copy = None if returned is None else returned.get(name)
        if torch.allclose(a, expected, rtol=1e-5, atol=1e-7):
            report.add(name, True, "stepped once")
        elif isinstance(copy, torch.Tensor) and copy.shape == b.shape and \
                torch.allclose(copy.detach(), expected, rtol=1e-5, atol=1e-7):
            report.add(name, False, "updated a copy, not in place: the parameter itself is unchanged "
                       "(write `param -= lr * grad` inside torch.no_grad())")
        elif torch.allclose(a, b) and grad.abs().max() > 0:
            report.add(name, False, "unchanged: this parameter was never stepped")
        elif torch.allclose(a, b + lr * grad, rtol=1e-5, atol=1e-7):
            report.add(name, False, "stepped uphill: subtract lr * grad, don't add it")
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


def raised(report: Report, name: str, e: Exception, names=()) -> Report:
    """Add a failed line to ``report`` saying, in course terms, what the student's code raised."""
    report.add(name, False, explain(e, names))
    return report


def random_float64(*shapes, seed: int = 0) -> list:
    """One standard-normal float64 tensor per shape, drawn in order from a generator seeded ``seed``."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]
