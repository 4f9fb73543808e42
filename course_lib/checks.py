"""Checks for students' code, with feedback in plain words.

Each ``check_*`` function runs a student's implementation against PyTorch on fresh random inputs
and returns a ``Report``: one line per thing checked (pass/fail, the shape received and expected,
the largest error). A report prints itself, is truthy when everything passed, and
``report.raise_if_failed()`` turns it into an ``AssertionError`` carrying the same text, which is
what a graded test cell wants.

    >>> report = check_linear_backward(MyLinear)      # an autograd Function class
    >>> report = check_linear_backward(my_backward)   # or backward(grad_out, x, w, b) -> 3 grads
    >>> print(report)
"""

import copy
import functools
import math
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


# --- lesson exercise checks ---
# Used by the exercises that end each lesson notebook. ``exercise`` runs a check on the student's
# answer; while that answer is still the stub raising ``NotImplementedError``, it runs the same
# check on the lesson's solution instead, so a freshly opened lesson shows what passing looks like.


def _watch_for_stub(answer, seen: list):
    """Wrap ``answer`` (a callable or a Function class) to note in ``seen`` a NotImplementedError."""

    def guard(fn):
        @functools.wraps(fn)
        def guarded(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except NotImplementedError:
                seen.append(fn.__name__)
                raise
        return guarded

    if not _is_function_class(answer):
        return guard(answer) if callable(answer) else answer

    class Guarded(answer):
        forward = staticmethod(guard(answer.forward))
        backward = staticmethod(guard(answer.backward))

    Guarded.__name__ = Guarded.__qualname__ = answer.__name__
    return Guarded


def exercise(check, answer, solution, **kwargs) -> Report:
    """``check(answer)``, or ``check(solution)`` while the student's answer is still the stub.

    The answer counts as not written yet when it raised ``NotImplementedError`` and no line of
    its report passed; the solution's report is then returned under a title that says so.
    ``kwargs`` go to ``check`` (e.g. ``forward=`` and ``shapes=`` for ``check_backward``).
    """
    seen = []
    report = check(_watch_for_stub(answer, seen), **kwargs)
    if not seen or any(line.passed for line in report.lines):
        return report
    shown = check(solution, **kwargs)
    name = getattr(answer, "__name__", "your answer")
    shown.title += f" [solution shown: {name} still raises NotImplementedError]"
    return shown


def _raised(report: Report, name: str, e: Exception) -> Report:
    report.add(name, False, f"raised {type(e).__name__}: {e}")
    return report


def check_parameter_count(fn) -> Report:
    """Check ``fn(sizes)`` counts the weights and biases of a fully connected network.

    ``sizes`` lists the layer widths, input first (``[784, 128, 64, 10]``); the expected count is
    what ``torch.nn.Linear`` layers of those sizes hold: ``sum(n_in * n_out + n_out)``.
    """
    report = Report("check_parameter_count")
    for sizes in ([3, 1], [4, 3], [10, 5, 1], [784, 128, 64, 10]):
        label = "sizes " + "-".join(map(str, sizes))
        pairs = list(zip(sizes, sizes[1:]))
        # "meta" tensors have shapes but no storage: no memory, no draw from the random generator.
        expected = sum(p.numel() for a, b in pairs
                       for p in torch.nn.Linear(a, b, device="meta").parameters())
        try:
            got = fn(list(sizes))
        except Exception as e:
            _raised(report, label, e)
            continue
        if isinstance(got, torch.Tensor) and got.numel() == 1:
            got = got.item()
        if isinstance(got, bool) or not isinstance(got, (int, float)):
            report.add(label, False, f"returned {type(got).__name__}, expected an integer")
        elif got == expected:
            report.add(label, True, f"{expected:,} parameters")
        else:
            hint = ""
            if got == sum(a * b for a, b in pairs):
                hint = " That is the weights alone: each layer also has one bias per output."
            elif got == sum(a * b + a for a, b in pairs):
                hint = " A layer has one bias per output, not per input."
            report.add(label, False, f"got {got:,}, expected {expected:,}.{hint}")
    return report


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
        return _raised(report, "backward", e)
    if len(wrt) == 1:
        got = (got,)
    if not isinstance(got, (tuple, list)) or len(got) != len(wrt):
        report.add("backward", False, f"expected a tuple of {len(wrt)} gradients, got {type(got).__name__}")
        return report
    for i, gv, ev in zip(wrt, got, expected):
        compare(f"gradient of input {i}", gv, ev, report)
    return report


def check_sgd_update(fn, lr: float = 0.1, seed: int = 0) -> Report:
    """Check ``fn(params, lr)`` steps each parameter once, in place, then clears its gradient.

    ``params`` is a list of ``nn.Parameter`` whose ``.grad`` is filled in, as after
    ``loss.backward()``; afterwards each must equal ``before - lr * grad`` and its ``.grad`` be
    zero or ``None``.
    """
    g = torch.Generator().manual_seed(seed)
    shapes = {"weight1": (2, 3), "bias1": (3,), "weight2": (3, 5), "bias2": (5,),
              "weight3": (5, 1), "bias3": (1,)}
    params = {}
    for name, shape in shapes.items():
        params[name] = torch.nn.Parameter(torch.randn(shape, generator=g, dtype=torch.float64))
        params[name].grad = torch.randn(shape, generator=g, dtype=torch.float64)
    before = {n: p.detach().clone() for n, p in params.items()}
    grads = {n: p.grad.clone() for n, p in params.items()}
    try:
        fn(list(params.values()), lr)
    except Exception as e:
        return _raised(Report("check_sgd_update"), "step", e)
    report = check_sgd_step(before, {n: p.detach() for n, p in params.items()}, grads, lr)
    report.title = "check_sgd_update"
    for name, p in params.items():
        cleared = p.grad is None or not p.grad.any()
        report.add(f"{name}.grad", cleared, "cleared" if cleared else
                   "still holds the gradient: zero it (or set it to None) after the step")
    return report


def check_train_step(fn, lr: float = 0.05, seed: int = 0) -> Report:
    """Check ``fn(model, inputs, targets, optimizer) -> loss`` makes one training step on MSE.

    Two steps run on a ``CustomModel`` beside a reference copy that does ``zero_grad``, forward,
    ``F.mse_loss``, ``backward``, ``step``; the second step catches gradients never zeroed.
    """
    from .models import CustomModel  # imported here: the checks sit above the library

    report = Report("check_train_step")
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(16, 4, generator=g), torch.randn(16, 1, generator=g)
    with torch.random.fork_rng(devices=[]):  # leave the caller's random stream untouched
        torch.manual_seed(seed)
        model = CustomModel(4, 8, 1)
    reference = copy.deepcopy(model)
    start = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    ref_optimizer = torch.optim.SGD(reference.parameters(), lr=lr)
    for step in (1, 2):
        ref_optimizer.zero_grad()
        ref_loss = F.mse_loss(reference(x), y)
        ref_loss.backward()
        ref_optimizer.step()
        try:
            loss = fn(model, x, y, optimizer)
        except Exception as e:
            return _raised(report, f"step {step}", e)
        if isinstance(loss, torch.Tensor) and loss.numel() == 1:
            loss = loss.item()
        if isinstance(loss, (int, float)) and not isinstance(loss, bool):
            ok = math.isclose(loss, ref_loss.item(), rel_tol=1e-5)
            report.add(f"loss returned (step {step})", ok, f"{loss:.6g}" if ok else
                       f"{loss:.6g}, expected {ref_loss.item():.6g} (F.mse_loss before the step)")
        else:
            report.add(f"loss returned (step {step})", False,
                       f"returned {type(loss).__name__}, expected the loss as a number")
        params = list(model.parameters())
        if all(torch.allclose(p, r, rtol=1e-5, atol=1e-6) for p, r in zip(params, reference.parameters())):
            report.add(f"parameters after step {step}", True, "match one SGD step")
        elif step == 2:
            report.add("parameters after step 2", False, "step 1 was right, step 2 is not: "
                       "call optimizer.zero_grad() before backward, or gradients add up")
        elif all(torch.equal(p, s) for p, s in zip(params, start)):
            report.add("parameters after step 1", False,
                       "unchanged: call optimizer.step() after loss.backward()")
            return report
        else:
            report.add("parameters after step 1", False, "differ from one SGD step: the order "
                       "is zero_grad, forward, loss, backward, step")
            return report
    return report


def check_mlp(fn, scale: float = 0.5) -> Report:
    """Check ``fn(sizes)`` returns ``nn.Sequential(Linear, ScaledReLU(scale), ..., Linear)``.

    The layers are ``course_lib.layers.Linear`` with widths ``sizes`` (input first), with a
    ``ScaledReLU`` between each pair and none after the last layer.
    """
    from .layers import Linear, ScaledReLU

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
            _raised(report, label, e)
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
            _raised(report, f"output shape ({label})", e)
            continue
        report.add(f"output shape ({label})", shape == (7, sizes[-1]),
                   f"{shape}" + ("" if shape == (7, sizes[-1]) else f", expected {(7, sizes[-1])}"))
    return report


# --- assignment checks ---
# Used by the graded assignments in assignments/source/: hidden tests draw new shapes and values
# from a seed (so hard-coded answers fail), and a network's gradients are checked by name.


def _random_linear_cases(seed: int, n_cases: int):
    """(name, input, weight, bias) in float64 with shapes drawn from ``seed``; every other case
    has no bias, and the first case is a batch of one."""
    g = torch.Generator().manual_seed(seed)
    cases = []
    for i in range(n_cases):
        batch, n_in, n_out = (int(v) for v in torch.randint(1, 10, (3,), generator=g))
        batch = 1 if i == 0 else batch
        x = torch.randn(batch, n_in, generator=g, dtype=torch.float64)
        w = torch.randn(n_in, n_out, generator=g, dtype=torch.float64)
        b = torch.randn(n_out, generator=g, dtype=torch.float64) if i % 2 == 0 else None
        name = f"{batch}x{n_in} -> {n_out}" + ("" if b is not None else ", no bias")
        cases.append((name, x, w, b))
    return cases


def check_linear_random(fn, seed: int = 0, n_cases: int = 3) -> Report:
    """Check a Linear ``Function`` class on ``n_cases`` random shapes drawn from ``seed``.

    For each case: the output against ``input @ weight + bias``, then ``torch.autograd.gradcheck``,
    which compares ``fn.backward`` with finite differences of ``fn.forward`` (and fails on a
    gradient of the wrong shape). Hard-coded shapes or numbers cannot pass a fresh seed.
    """
    if not _is_function_class(fn):
        raise TypeError(f"check_linear_random: expected a torch.autograd.Function class, got {fn!r}")
    report = Report(f"check_linear_random(seed={seed})")
    for case, x, w, b in _random_linear_cases(seed, n_cases):
        try:
            out = fn.apply(x, w, b)
        except Exception as e:
            report.add(f"output ({case})", False, f"raised {type(e).__name__}: {e}")
            continue
        if not compare(f"output ({case})", out, F.linear(x, w.t(), b), report):
            continue
        inputs = tuple(t.clone().requires_grad_() for t in (x, w, b) if t is not None)
        try:
            ok = torch.autograd.gradcheck(fn.apply, inputs, raise_exception=False)
            detail = "finite differences agree with backward" if ok else \
                "finite differences disagree with backward: check each gradient's formula"
        except Exception as e:  # e.g. a gradient of the wrong shape, caught by autograd itself
            ok, detail = False, f"raised {type(e).__name__}: {_first_line(e)}"
        report.add(f"gradients ({case})", ok, detail)
    return report


def _first_line(error: Exception) -> str:
    return next((line for line in str(error).splitlines() if line.strip()), "")


def check_gradients(got, expected: dict, title: str = "check_gradients") -> Report:
    """Compare a dict of gradients (parameter name -> tensor) with the expected one, by name.

    A wrong gradient that equals another parameter's gradient is named as such: that is the
    gradient of the wrong layer, handed to the wrong parameter.
    """
    report = Report(title)
    names = ", ".join(expected)
    if not isinstance(got, dict):
        report.add("gradients", False, f"returned {type(got).__name__}, expected a dict with keys {names}")
        return report
    for name, exp in expected.items():
        if name not in got:
            report.add(name, False, f"missing: return a gradient for every parameter ({names})")
            continue
        if compare(name, got[name], exp, report):
            continue
        twins = [other for other, e in expected.items() if other != name
                 and isinstance(got[name], torch.Tensor) and got[name].shape == e.shape
                 and torch.allclose(got[name].detach().to(e.dtype), e, **TOLERANCE)]
        if twins:
            report.lines[-1].detail += f" It equals the gradient of {twins[0]}: check which layer it came from."
    for name in got:
        if name not in expected:
            report.add(name, False, f"unexpected key: the parameters are {names}")
    return report


def _number(value):
    """``value`` as a Python number (a one-element tensor counts), or ``None`` if it is not one."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    return None if isinstance(value, bool) or not isinstance(value, (int, float)) else value


def _toy_mnist_batches(seed: int, sizes=(8, 8, 5)):
    """MNIST-shaped ``(images (n, 1, 28, 28), labels (n,))`` batches; the last one is short."""
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)) for n in sizes]


def check_train_epoch(fn, seed: int = 0, lr: float = 0.05) -> Report:
    """Check ``fn(model, batches, optimizer) -> loss`` trains one epoch as ``course_lib.train`` does.

    A small ``NeuralNet`` trains on three batches (the last one short) beside a copy trained by
    ``course_lib.train.train_epoch``: per batch cross-entropy, ``zero_grad``, ``backward``,
    ``step``, in training mode. The returned loss must be the mean over every sample.
    """
    from .models import NeuralNet  # imported here: the checks sit above the library
    from .train import train_epoch

    report = Report("check_train_epoch")
    batches = _toy_mnist_batches(seed)
    with torch.random.fork_rng(devices=[]):  # leave the caller's random stream untouched
        torch.manual_seed(seed)
        model = NeuralNet(16)
    reference = copy.deepcopy(model)
    ref_loss, _, _ = train_epoch(reference, batches, torch.optim.SGD(reference.parameters(), lr=lr, momentum=0.9))
    model.eval()  # the function must switch to training mode itself
    modes = []
    hook = model.register_forward_pre_hook(lambda module, args: modes.append(module.training))
    try:
        loss = fn(model, iter(batches), torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9))
    except Exception as e:
        return _raised(report, "train_epoch", e)
    finally:
        hook.remove()
    report.add("training mode", bool(modes) and all(modes), "model.train() was called" if all(modes)
               else "the model ran in eval mode: call model.train() first")
    report.add("batches", len(modes) == len(batches), f"the model ran {len(modes)} times for "
               f"{len(batches)} batches" + ("" if len(modes) == len(batches) else ": once per batch"))
    number = _number(loss)
    if number is None:
        report.add("loss returned", False, f"returned {type(loss).__name__}, expected the mean loss as a number")
    elif math.isclose(number, ref_loss, rel_tol=1e-4):
        report.add("loss returned", True, f"{number:.5g}, the mean over all {sum(len(y) for _, y in batches)} samples")
    else:
        report.add("loss returned", False, f"{number:.5g}, expected {ref_loss:.5g}: the cross-entropy averaged "
                   "over every sample (weight each batch's mean loss by its size)")
    hint = "Per batch: optimizer.zero_grad(), forward, F.cross_entropy, loss.backward(), optimizer.step()."
    for (name, got), expected in zip(model.named_parameters(), reference.parameters()):
        compare(name, got, expected, report, hint=hint)
    return report


class _Predicts(torch.nn.Module):
    """A "classifier" that predicts the class written in each image's first pixel; it records
    whether it ran in training mode and with gradients on."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, images):
        self.calls.append((self.training, torch.is_grad_enabled()))
        return F.one_hot(images[:, 0, 0, 0].long(), 10).float()


def check_evaluate_accuracy(fn) -> Report:
    """Check ``fn(model, batches) -> accuracy``: correct predictions over every sample, as a
    fraction, in eval mode and without gradients (compared with ``course_lib.train.evaluate``)."""
    from .train import evaluate

    report = Report("check_evaluate_accuracy")
    correct = [8, 4, 0]  # of batches of 8, 8 and 2: a mean of the batch means would say 50%
    batches = []
    for n, k in zip((8, 8, 2), correct):
        labels = torch.arange(n) % 10
        predicted = torch.where(torch.arange(n) < k, labels, (labels + 1) % 10)
        batches.append((predicted.float().view(n, 1, 1, 1).expand(n, 1, 28, 28).clone(), labels))
    expected = evaluate(_Predicts(), batches)[1]
    model = _Predicts().train()
    try:
        got = fn(model, iter(batches))
    except Exception as e:
        return _raised(report, "accuracy", e)
    number = _number(got)
    if number is None:
        report.add("accuracy", False, f"returned {type(got).__name__}, expected a number in [0, 1]")
    elif math.isclose(number, expected, rel_tol=1e-6):
        report.add("accuracy", True, f"{number:.4f} ({sum(correct)} of {sum(len(y) for _, y in batches)} correct)")
    else:
        hints = {sum(correct): "A count: divide by the number of samples",
                 100 * expected: "A percentage: return a fraction in [0, 1]",
                 sum(k / len(y) for k, (_, y) in zip(correct, batches)) / 3:
                     "A mean of the batch accuracies: count correct predictions over every sample"}
        hint = next((h for value, h in hints.items() if math.isclose(number, value, rel_tol=1e-6)), "")
        report.add("accuracy", False, f"{number:.4g}, expected {expected:.4f}. {hint}".strip())
    report.add("eval mode", bool(model.calls) and not any(t for t, _ in model.calls),
               "model.eval() was called" if model.calls and not any(t for t, _ in model.calls)
               else "the model ran in training mode: call model.eval() first")
    report.add("no gradients", bool(model.calls) and not any(g for _, g in model.calls),
               "ran under torch.no_grad()" if model.calls and not any(g for _, g in model.calls)
               else "gradients were recorded: evaluate inside `with torch.no_grad():`")
    return report
