"""Checks of the cells a student writes in the main flow of lessons 1, 2 and 4 ("Your turn").

Each check runs the student's code on float64 cases against autograd, reports every tensor on its
own line (shape, largest error, where) and names the usual mistake when it sees one: a transpose,
a batch mean where a sum belongs, a bias that may be ``None``, a layer called in the wrong order.
A cell still raising ``NotImplementedError`` is reported as NOT ATTEMPTED, never as wrong.

    check_forward            lesson 1: ``fn(x, w, b) -> x w + b``, the bias optional
    check_linear_gradients   lesson 2: ``fn(G, X, W) -> (dL/dX, dL/dW, dL/db)``
    check_linear_function    lesson 2: a Linear autograd Function, its skipped gradients included
    check_backward_and_step  lesson 4: three ManualLinear backwards in reverse order, then SGD
"""

import torch
import torch.nn.functional as F

from .exercise_runner import NotAttempted
from .linear import _check_linear_case, _linear_cases, _student_grads, check_linear_forward
from .report import Report, compare, raised, random_float64
from .training import check_sgd_step

STUB = "NOT ATTEMPTED: it still raises NotImplementedError; replace that line with your code"


def attempt(report: Report, name: str, fn, *args):
    """``(True, fn(*args))``; on an exception add a line to ``report`` and return ``(False, None)``."""
    try:
        return True, fn(*args)
    except NotImplementedError:
        report.add(name, False, STUB)
    except Exception as e:
        raised(report, name, e)
    return False, None


def finish(report: Report) -> Report:
    """``report``, or a NOT ATTEMPTED report when every line of it is an untouched stub."""
    if report.lines and all(line.detail == STUB for line in report.lines):
        stub = NotAttempted(report.title)
        stub.add("stub", False, "your cell still raises NotImplementedError: replace it with your "
                                "code, then run this cell again.")
        return stub
    return report


def _close(a, b) -> bool:
    return (isinstance(a, torch.Tensor) and a.shape == b.shape
            and torch.allclose(a.detach().double(), b.double(), rtol=1e-6, atol=1e-8))


def _quietly(fn, *args):
    """``fn(*args)``, or ``None`` if it raises."""
    try:
        return fn(*args)
    except Exception:
        return None


def _explain_more(report: Report, hints: dict) -> None:
    """Append ``hints[k]`` to each failed line whose detail contains the text ``k``."""
    for line in report.lines:
        for text, hint in hints.items():
            if not line.passed and text in line.detail:
                line.detail += f" ({hint})"


# ---------------------------------------------------------------------------------------------
# Lesson 1: the forward pass
# ---------------------------------------------------------------------------------------------

def check_forward(fn, seed: int = 0) -> Report:
    """Check ``fn(x, w, b)`` is ``x @ w + b`` for ``x (B, n_in)``, ``w (n_in, n_out)``, ``b (n_out,)``
    or ``None``; a bias missing from the output or a transposed weight is named."""
    report = check_linear_forward(fn, seed)
    report.title = "check_forward"
    for line, (_, x, w, b) in zip(report.lines, _linear_cases(seed)):
        if line.passed:
            continue
        if "NotImplementedError" in line.detail:
            line.detail = STUB
        elif b is None and ("NoneType" in line.detail or "None" in line.detail):
            line.detail += " (b is None here, a layer without a bias: then return x @ w alone)"
        elif "cannot be multiplied" in line.detail:
            line.detail += (f" (x is (B, n_in) = {tuple(x.shape)} and w is (n_in, n_out) = "
                            f"{tuple(w.shape)}: this course's layout needs no transpose)")
        elif b is not None and _close(_quietly(fn, x, w, b), x @ w):
            line.detail += " It is x @ w: the bias is missing."
    return finish(report)


# ---------------------------------------------------------------------------------------------
# Lesson 2: the three gradients, then a whole autograd Function
# ---------------------------------------------------------------------------------------------

def _gradient_hint(name: str, got, expected, batch: int) -> str:
    """The usual mistake behind a wrong gradient of the right shape, in words."""
    if not isinstance(got, torch.Tensor) or got.shape != expected.shape:
        if name == "dL/db" and isinstance(got, torch.Tensor) and tuple(got.shape) == (batch,):
            return "It is summed over the outputs (dim 1): the bias gradient sums over the batch (dim 0)."
        return ""
    got = got.detach().double()
    if _close(got, -expected):
        return "The sign is flipped."
    if name == "dL/db" and _close(got, expected / batch):
        return (f"It is {batch} times too small: the mean over the batch. b is added to every "
                "row, so every row's gradient adds up: a sum, not a mean.")
    if name == "dL/dW" and _close(got, expected / batch):
        return f"It is {batch} times too small: the rows' contributions add up, no division by B."
    return ""


def check_linear_gradients(fn, seed: int = 0) -> Report:
    """Check ``fn(G, X, W) -> (dL/dX, dL/dW, dL/db)`` for ``Y = X W + b`` and ``G = dL/dY``.

    The case is non-square (``X (4, 5)``, ``W (5, 3)``), so a transposed product has the wrong
    shape and is named; a batch mean in place of a sum, a sign and the wrong axis are named too.
    """
    report = Report("check_linear_gradients")
    X, W, b = random_float64((4, 5), (5, 3), (3,), seed=seed)
    G = random_float64((4, 3), seed=seed + 1)[0]
    leaves = [t.clone().requires_grad_() for t in (X, W, b)]
    (leaves[0] @ leaves[1] + leaves[2]).backward(G)
    ok, got = attempt(report, "gradients", fn, G.clone(), X.clone(), W.clone())
    if not ok:
        _explain_more(report, {"cannot be multiplied": "write down each factor's shape: which "
                               "product of (4, 3), (4, 5) and (5, 3), transposed as needed, has the "
                               "gradient's shape?"})
        return finish(report)
    if not isinstance(got, (tuple, list)) or len(got) != 3:
        report.add("gradients", False, f"expected a tuple (dL/dX, dL/dW, dL/db), got {type(got).__name__}")
        return report
    for name, g, leaf in zip(("dL/dX", "dL/dW", "dL/db"), got, leaves):
        if not compare(name, g, leaf.grad, report):
            hint = _gradient_hint(name, g, leaf.grad, X.shape[0])
            report.lines[-1].detail += f" {hint}" if hint else ""
    return report


def check_linear_function(cls, seed: int = 0) -> Report:
    """Check a Linear autograd ``Function`` class: forward, the three gradients with and without
    a bias, and that a gradient ``ctx.needs_input_grad`` says nobody needs comes back ``None``."""
    report = Report(f"check_linear_function({getattr(cls, '__name__', 'cls')})")
    for line in check_linear_forward(cls, seed).lines:
        report.lines.append(line)
    for case, x, w, b in _linear_cases(seed):
        _check_linear_case(report, cls, (case, (x, w, b), (True, True, b is not None)), seed)
    (_, x, w, b), (_, x1, w1, _) = _linear_cases(seed)[:2]
    for case, tensors, needs in [("input needs no gradient", (x, w, b), (False, True, True)),
                                 ("frozen weight, no bias", (x1, w1, None), (True, False, False))]:
        before = len(report.lines)
        _check_linear_case(report, cls, (case, tensors, needs), seed)
        if len(report.lines) > before and not report.lines[-1].passed:
            continue
        zeros = torch.zeros(tensors[0].shape[0], tensors[1].shape[1], dtype=torch.float64)
        grads = _quietly(_student_grads, cls, zeros, tensors, needs) or (None, None, None)
        for name, grad, need, t in zip(("grad_input", "grad_weight", "grad_bias"), grads, needs, tensors):
            if not need and t is not None:
                report.add(f"{name} ({case})", grad is None, "None: skipped, as needs_input_grad says"
                           if grad is None else "computed although ctx.needs_input_grad says no one "
                           "needs it: return None and skip the work (and what it had to save)")
    for line in report.lines:
        if not line.passed and "NotImplementedError" in line.detail:
            line.detail = STUB
    no_bias = ("apply(x, w) gives no bias: b is None then (give it that default), and "
               "ctx.needs_input_grad has two flags")
    _explain_more(report, {"expected 3, got 2": no_bias, "missing 1 required positional": no_bias,
                           "missing a required argument": no_bias, "'NoneType'": no_bias})
    return finish(report)


# ---------------------------------------------------------------------------------------------
# Lesson 4: the backward pass of three ManualLinear layers, and the SGD step
# ---------------------------------------------------------------------------------------------

def _three_layer_case(seed: int):
    """Parameters of a 2-3-5-1 network (float64, requiring grad), a batch and its targets."""
    shapes = [(2, 3), (3,), (3, 5), (5,), (5, 1), (1,), (4, 2), (4, 1)]
    *tensors, X, target = random_float64(*shapes, seed=seed)
    names = [f"{kind}{k}" for k in (1, 2, 3) for kind in ("weight", "bias")]
    return dict(zip(names, tensors)), X, target


def check_backward_and_step(fn, lr: float = 0.1, seed: int = 0) -> Report:
    """Check ``fn(linears, grad_output, params, lr) -> grads``: the three ``ManualLinear`` layers
    (forward already run) backpropagate ``grad_output = dL/d(out3)`` in reverse order, and every
    parameter takes one SGD step in place. Each gradient and each parameter gets its own line."""
    from ..manual import ManualLinear  # manual sits above checks' imports

    report = Report("check_backward_and_step")
    initial, X, target = _three_layer_case(seed)
    params = {n: t.clone().requires_grad_() for n, t in initial.items()}
    linears = [ManualLinear() for _ in range(3)]
    out = X
    for k, layer in enumerate(linears, start=1):
        out = layer.forward(out, params[f"weight{k}"], params[f"bias{k}"])
    grad_output = (2 * (out - target) / out.numel()).detach()
    torch_params = {n: t.clone().requires_grad_() for n, t in initial.items()}
    ref = X
    for k in (1, 2, 3):
        ref = F.linear(ref, torch_params[f"weight{k}"].T, torch_params[f"bias{k}"])
    F.mse_loss(ref, target).backward()
    expected = {n: p.grad for n, p in torch_params.items()}
    ok, got = attempt(report, "backward and step", fn, linears, grad_output, params, lr)
    unpack = "Unpack each backward as (grad_input, grad_weight, grad_bias)."
    _explain_more(report, {"grad_output must have the output's shape": "start with the last "
                           "layer: each backward takes the gradient of its own output",
                           "doesn't match the broadcast shape": unpack})
    if not ok:
        return finish(report)
    if not isinstance(got, dict):
        report.add("gradients", False, f"returned {type(got).__name__}, expected a dict keyed weight1 .. bias3")
        return report
    for name in initial:
        compare(f"dL/d{name}", got.get(name), expected[name], report,
                hint=unpack)
    after = {n: p.detach() for n, p in params.items()}
    for line in check_sgd_step(initial, after, expected, lr).lines:
        report.add(f"{line.name} after the step", line.passed, line.detail)
    _explain_more(report, {"never stepped": "if you wrote p = p - lr * grad, that made a new tensor "
                           "and rebound the name p: update in place, p -= ..., inside torch.no_grad()"})
    return report
