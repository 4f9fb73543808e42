"""Checks of exercises in lessons 1, 2 and 4 that need a derivation the lesson does not print.

The checks, by lesson::

    check_fold_standardization  lesson 1: an input standardisation ``(x - mu) / s`` folded into
                                the layer after it
    check_linear_jvp            lesson 2: the forward-mode derivative (jvp) of ``x W + b``
    check_weight_decay_step     lesson 4: an SGD step on ``L + (lambda / 2) * sum ||W||^2``,
                                the weights decayed and the biases not
"""

import torch

from .report import Report, compare, random_float64
from .student import _close, attempt, finish


def check_fold_standardization(fn, seed: int = 0) -> Report:
    """Check ``fn(w, b, mu, s) -> (w2, b2)`` with ``((x - mu) / s) w + b == x w2 + b2`` for every
    ``x``; ``mu`` and ``s`` hold one mean and one standard deviation per input ``(n_in,)``."""
    report = Report("check_fold_standardization")
    w, b, mu, s, x = random_float64((5, 3), (3,), (5,), (5,), (4, 5), seed=seed)
    s = s.abs() + 0.5
    ok, got = attempt(report, "fold", fn, w.clone(), b.clone(), mu.clone(), s.clone())
    _explain_more_shape(report)
    if not ok:
        return finish(report)
    w2, b2 = got
    w_hint = "Input i is divided by s_i before it meets row i of w."
    if isinstance(w2, torch.Tensor) and _close(w2, w * s.unsqueeze(1)):
        w_hint = "It is w times s: the input is divided by s, not multiplied."
    compare("weight", w2, w / s.unsqueeze(1), report, hint=w_hint)
    b_hint = "Expand ((x - mu) / s) w: which part does not depend on x?"
    if isinstance(b2, torch.Tensor) and _close(b2, b):
        b_hint = "It is the old bias: the mean's shift, -(mu / s) w, is missing."
    compare("bias", b2, b - (mu / s) @ w, report, hint=b_hint)
    if report.passed:
        compare("outputs for a batch", x @ w2 + b2, ((x - mu) / s) @ w + b, report)
    return report


def _explain_more_shape(report: Report) -> None:
    for line in report.lines:
        if not line.passed and "must match the size" in line.detail:
            line.detail += " (mu and s have one entry per input: per row of w, shape (n_in, 1) to broadcast)"


def check_linear_jvp(fn, seed: int = 0) -> Report:
    """Check ``fn(x, w, b, dx, dw, db) -> dY``, the change of ``Y = x W + b`` when the inputs move
    along ``(dx, dw, db)`` (forward mode, as ``torch.func.jvp`` computes it)."""
    report = Report("check_linear_jvp")
    x, w, b, dx, dw, db = random_float64((4, 5), (5, 3), (3,), (4, 5), (5, 3), (3,), seed=seed)
    expected = _jvp_by_double_vjp((x, w, b), (dx, dw, db))
    ok, got = attempt(report, "jvp", fn, x, w, b, dx, dw, db)
    if not ok:
        return finish(report)
    hint = ""
    for wrong, words in [(dx @ w + db, "the term from dw, x dW, is missing"),
                         (x @ dw + db, "the term from dx, dX W, is missing"),
                         (dx @ w + x @ dw, "the bias's change db is missing"),
                         (dx @ w + x @ dw + dx @ dw + db, "dX dW is second order: the jvp keeps "
                          "only first-order terms")]:
        if _close(got, wrong):
            hint = f"It looks like {words}: Y is a product of two moving factors (product rule)."
    compare("dY", got, expected, report, hint=hint)
    return report


def _jvp_by_double_vjp(primals, tangents):
    """``J v`` of ``x W + b`` by reverse mode twice: the vjp ``u -> J^T u`` is linear in ``u``,
    and the gradient of ``<J^T u, v>`` with respect to ``u`` is ``J v``."""
    x, w, b = (t.clone().requires_grad_() for t in primals)
    y = x @ w + b
    u = torch.zeros_like(y, requires_grad=True)
    vjp = torch.autograd.grad(y, (x, w, b), u, create_graph=True)
    return torch.autograd.grad(sum((g * v).sum() for g, v in zip(vjp, tangents)), u)[0]


def _decay_case(seed: int):
    g = torch.Generator().manual_seed(seed)
    params = {}
    for name, shape in {"weight1": (3, 4), "bias1": (4,), "weight2": (4, 2), "bias2": (2,)}.items():
        params[name] = torch.nn.Parameter(torch.randn(shape, generator=g, dtype=torch.float64))
        params[name].grad = torch.randn(shape, generator=g, dtype=torch.float64)
    return params


def check_weight_decay_step(fn, lr: float = 0.1, decay: float = 0.5, seed: int = 0) -> Report:
    """Check ``fn(params, lr, decay)`` takes one SGD step in place on ``L + (decay / 2) * sum of
    ||W||^2 over the weights only``: ``params`` maps names (``weight1``, ``bias1``, ...) to
    parameters whose ``.grad`` holds ``dL/dp``."""
    report = Report("check_weight_decay_step")
    params = _decay_case(seed)
    before = {n: p.detach().clone() for n, p in params.items()}
    grads = {n: p.grad.clone() for n, p in params.items()}
    ok, _ = attempt(report, "step", fn, params, lr, decay)
    if not ok:
        return finish(report)
    for name, p in params.items():
        b, g = before[name], grads[name]
        is_weight = name.startswith("weight")
        expected = b - lr * (g + decay * b) if is_weight else b - lr * g
        hint = ""
        if _close(p, b - lr * (g + decay * b)) and not is_weight:
            hint = "This bias was decayed too: the penalty sums over the weights only."
        elif _close(p, b - lr * g) and is_weight:
            hint = "No decay: d/dW of (lambda / 2) ||W||^2 adds to the gradient."
        elif _close(p, b - lr * (g - decay * b)):
            hint = "The decay has the wrong sign: it pulls weights towards 0."
        elif _close(p, b - lr * (g + decay * b / 2)):
            hint = "Half the decay: d/dW of (lambda / 2) W^2 is lambda W."
        elif _close(p, b):
            hint = "Unchanged: update the parameter in place (p -= ...) inside torch.no_grad()."
        compare(f"{name} after the step", p.detach(), expected, report, hint=hint)
    return report
