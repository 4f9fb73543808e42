"""Checks for lesson 5 and assignment 5: backpropagation through softmax cross-entropy and the MLP.

Every check names each tensor it compares (shape, largest error and where) and says what a wrong
one looks like. A student's function that still raises ``NotImplementedError`` is reported as
NOT ATTEMPTED, never checked against a solution in its place.
"""

import itertools

import torch
import torch.nn.functional as F

from .report import TOLERANCE, Report, compare, is_stub, raised

ORDER = ("logits", "h2", "z2", "h1", "z1", "weight3", "bias3", "weight2", "bias2", "weight1", "bias1")
PARAMETERS = ORDER[5:]


NOT_ATTEMPTED = "NOT ATTEMPTED"


def _call(report: Report, name: str, fn, *args):
    """``fn(*args)``; on failure add a line to ``report`` (NOT ATTEMPTED for an untouched stub) and
    return ``NOT_ATTEMPTED`` or ``None``."""
    try:
        return fn(*args)
    except Exception as e:
        if not is_stub(e):
            raised(report, name, e)
            return None
    report.title += f" [{NOT_ATTEMPTED}]"
    report.add(getattr(fn, "__name__", "your function"), False,
               f"{NOT_ATTEMPTED}: it still raises NotImplementedError; replace that line with your code")
    return NOT_ATTEMPTED


def _close(a, b) -> bool:
    return isinstance(a, torch.Tensor) and a.shape == b.shape and torch.allclose(
        a.detach().double(), b.double(), **TOLERANCE)


# ---------------------------------------------------------------------------------------------
# The gradient of the loss with respect to the logits
# ---------------------------------------------------------------------------------------------

def _ce_cases(seed: int):
    """(name, logits, labels, smoothing) in float64."""
    g = torch.Generator().manual_seed(seed)
    extreme = 1000 * torch.randint(-1, 2, (5, 6), generator=g).double()
    return [
        ("batch of 8, 10 classes", torch.randn(8, 10, generator=g, dtype=torch.float64),
         torch.randint(10, (8,), generator=g), 0.0),
        ("batch of 1", torch.randn(1, 4, generator=g, dtype=torch.float64), torch.tensor([3]), 0.0),
        ("logits of +-1000", extreme, torch.randint(6, (5,), generator=g), 0.0),
        ("smoothing 0.1", torch.randn(6, 5, generator=g, dtype=torch.float64),
         torch.randint(5, (6,), generator=g), 0.1),
        ("smoothing 0.3, logits of +-1000", extreme.flip(0), torch.randint(6, (5,), generator=g), 0.3),
    ]


def _ce_hint(got, expected, smoothing) -> str:
    """A symptom of a wrong ``dL/dlogits`` of the right shape, in words (never the formula)."""
    batch = expected.shape[0]
    if not torch.isfinite(got).all():
        return "exp overflowed: these logits reach +-1000 (see the log-sum-exp section)"
    if batch > 1 and _close(got, batch * expected):
        return f"{batch} times too large: the loss is the mean over the batch of {batch}"
    row_sums = got.sum(1)
    if not torch.allclose(row_sums, torch.zeros_like(row_sums), atol=1e-6):
        return f"each row of dL/dlogits sums to 0, but yours sum to e.g. {row_sums[0].item():.3g}"
    if smoothing:
        return "with smoothing the target is no longer one-hot: derive dL/dlogits again from the loss"
    return ""


def check_cross_entropy_backward(fn, seed: int = 0, smoothing: bool = True) -> Report:
    """Check ``fn(logits, labels, smoothing) -> dL/dlogits`` for ``F.cross_entropy``'s mean loss.

    ``smoothing`` is ``label_smoothing``: the target puts ``1 - smoothing`` on the label and spreads
    ``smoothing`` evenly over all ``C`` classes. Cases include logits of +-1000 and a batch of one.
    With ``smoothing=False`` the check calls ``fn(logits, labels)`` on the cases without smoothing.
    """
    report = Report(f"check_cross_entropy_backward({getattr(fn, '__name__', 'fn')})")
    for case, logits, labels, eps in _ce_cases(seed):
        if eps and not smoothing:
            continue
        name = f"dL/dlogits ({case})"
        leaf = logits.clone().requires_grad_()
        F.cross_entropy(leaf, labels, label_smoothing=eps).backward()
        before = len(report.lines)
        args = (logits.clone(), labels.clone()) + ((eps,) if smoothing else ())
        got = _call(report, name, fn, *args)
        if got is NOT_ATTEMPTED:
            return report
        if len(report.lines) > before:  # it raised
            continue
        hint = ""
        if isinstance(got, torch.Tensor) and got.shape == leaf.grad.shape:
            hint = _ce_hint(got.detach().double(), leaf.grad, eps)
            if not torch.isfinite(got).all():
                report.add(name, False, f"shape {tuple(got.shape)}, but it contains NaN or inf: {hint}")
                continue
        compare(name, got, leaf.grad, report, hint=hint)
    return report


# ---------------------------------------------------------------------------------------------
# Every gradient of the MLP
# ---------------------------------------------------------------------------------------------

def mlp_gradients(params: dict, images, labels, reduction: str = "mean") -> dict:
    """Every gradient of ``F.cross_entropy`` through the MLP, by autograd on PyTorch's own ops.

    ``params`` holds ``weight1..3`` shaped ``(in, out)`` and ``bias1..3``; the result is keyed as
    ``ORDER``: the intermediate tensors ``logits, h2, z2, h1, z1``, then the parameters.
    """
    leaves = {name: params[name].detach().clone().requires_grad_() for name in PARAMETERS}
    x = images.detach().flatten(1)
    inner = {}
    inner["z1"] = F.linear(x, leaves["weight1"].T, leaves["bias1"])
    inner["h1"] = torch.relu(inner["z1"])
    inner["z2"] = F.linear(inner["h1"], leaves["weight2"].T, leaves["bias2"])
    inner["h2"] = torch.relu(inner["z2"])
    inner["logits"] = F.linear(inner["h2"], leaves["weight3"].T, leaves["bias3"])
    for t in inner.values():
        t.retain_grad()
    F.cross_entropy(inner["logits"], labels, reduction=reduction).backward()
    grads = {**{k: t.grad for k, t in inner.items()}, **{k: t.grad for k, t in leaves.items()}}
    return {name: grads[name] for name in ORDER}


GRADIENT_HINTS = {
    "logits": "dL/dlogits comes first: every other gradient is built from it",
    "z2": "the ReLU passes dL/dh2 on where z2 > 0 and nothing elsewhere",
    "z1": "the ReLU passes dL/dh1 on where z1 > 0 and nothing elsewhere",
    "h2": "dL/dh2 goes back through weight3, shape (B, out) @ (out, in)",
    "h1": "dL/dh1 goes back through weight2, shape (B, out) @ (out, in)",
    **{f"weight{k}": f"dL/dweight{k} = (layer {k}'s input)^T @ dL/dz{k}, as computed in the forward pass: "
                     f"(in, B) @ (B, out), weight{k}'s own shape" for k in (1, 2)},
    "weight3": "dL/dweight3 = h2^T @ dL/dlogits: (in, B) @ (B, out), weight3's own shape",
    **{f"bias{k}": f"dL/dbias{k} sums dL/dz{k} over the batch's rows: one value per unit, shape (out,)"
       for k in (1, 2)},
    "bias3": "dL/dbias3 sums dL/dlogits over the batch's rows: one value per class, shape (out,)",
}


def check_mlp_gradients(got: dict, params: dict, images, labels, reduction: str = "mean") -> Report:
    """Compare a dict of hand-computed gradients with autograd's, one line per tensor.

    ``got`` holds any of the names in ``ORDER`` (e.g. what ``ManualMLP.backward`` returns); each
    present is compared with ``mlp_gradients(params, images, labels, reduction)``, in float64.
    """
    report = Report("check_mlp_gradients")
    if not isinstance(got, dict):
        report.add("gradients", False, f"got {type(got).__name__}, expected a dict keyed by {', '.join(ORDER)}")
        return report
    expected = mlp_gradients(params, images, labels, reduction)
    names = [n for n in ORDER if n in got] or list(PARAMETERS)
    for name in names:
        compare(f"dL/d{name}", got.get(name), expected[name], report, hint=GRADIENT_HINTS[name])
    return report


# ---------------------------------------------------------------------------------------------
# A whole manual step, with three classic mistakes recognised
# ---------------------------------------------------------------------------------------------

MISTAKES = {  # flag -> the symptom it leaves, as the check reports it
    "no_mean": "every gradient is B times too large",
    "no_onehot": "dL/dlogits does not depend on the labels (its rows sum to 1, not 0)",
    "updated_weights": "the gradient sent back to the layer below went through weights already updated",
}


def _step_variant(params, x, labels, lr, mistakes=()):
    """Gradients and new parameters of one SGD step, with the given ``MISTAKES`` made on purpose."""
    p = {n: t.clone() for n, t in params.items()}
    z1 = x @ p["weight1"] + p["bias1"]
    z2 = z1.relu() @ p["weight2"] + p["bias2"]
    inputs, pre = {1: x, 2: z1.relu(), 3: z2.relu()}, {1: z1, 2: z2}
    grad = torch.softmax(inputs[3] @ p["weight3"] + p["bias3"], dim=1)
    if "no_onehot" not in mistakes:
        grad = grad - F.one_hot(labels, grad.shape[1]).to(grad.dtype)
    if "no_mean" not in mistakes:
        grad = grad / x.shape[0]
    grads = {}
    for k in (3, 2, 1):
        w, b = p[f"weight{k}"], p[f"bias{k}"]
        grads[f"weight{k}"], grads[f"bias{k}"] = inputs[k].T @ grad, grad.sum(0)
        new_w, new_b = w - lr * grads[f"weight{k}"], b - lr * grads[f"bias{k}"]
        if k > 1:
            grad = (grad @ (new_w if "updated_weights" in mistakes else w).T) * (pre[k - 1] > 0)
        p[f"weight{k}"], p[f"bias{k}"] = new_w, new_b
    return grads, p


def _step_case(seed: int):
    g = torch.Generator().manual_seed(seed)
    sizes = (12, 10, 6, 4)
    params = {}
    for k in (1, 2, 3):
        bound = sizes[k - 1] ** -0.5
        params[f"weight{k}"] = (torch.rand(sizes[k - 1], sizes[k], generator=g, dtype=torch.float64) * 2 - 1) * bound
        params[f"bias{k}"] = (torch.rand(sizes[k], generator=g, dtype=torch.float64) * 2 - 1) * bound
    x = torch.randn(8, sizes[0], generator=g, dtype=torch.float64)
    return params, x, torch.randint(sizes[-1], (8,), generator=g)


def _diagnose(got: dict, params, x, labels, lr) -> list:
    """The mistakes whose combination reproduces ``got`` exactly, or ``None`` if none does."""
    for n in (1, 2, 3):
        for combo in itertools.combinations(MISTAKES, n):
            grads, _ = _step_variant(params, x, labels, lr, combo)
            if all(_close(got.get(name), grads[name]) for name in PARAMETERS):
                return list(combo)
    return None


def check_manual_step(fn, lr: float = 0.5, seed: int = 0) -> Report:
    """Check ``fn(params, x, labels, lr) -> grads``: one SGD step of the MLP on the mean cross-entropy.

    ``fn`` must update ``params`` (``weight1..3`` shaped ``(in, out)``, ``bias1..3``) in place and
    return the six gradients by name. Each gradient and each updated parameter is compared with
    autograd and ``p - lr * grad``; a wrong step is matched against ``MISTAKES`` to say which of
    their symptoms it shows.
    """
    report = Report(f"check_manual_step({getattr(fn, '__name__', 'fn')})")
    params, x, labels = _step_case(seed)
    student = {n: t.clone() for n, t in params.items()}
    got = _call(report, "step", fn, student, x.clone(), labels.clone(), lr)
    if got is NOT_ATTEMPTED or report.lines:
        return report
    if not isinstance(got, dict):
        report.add("gradients returned", False, f"got {type(got).__name__}, expected a dict keyed by "
                   f"{', '.join(PARAMETERS)}")
        return report
    expected = mlp_gradients(params, x, labels)
    for name in PARAMETERS:
        compare(f"dL/d{name}", got.get(name), expected[name], report)
    for name in PARAMETERS:
        compare(f"{name} after the step", student.get(name), params[name] - lr * expected[name], report)
    if not report.passed:
        found = _diagnose(got, params, x, labels, lr)
        if found:
            report.add("diagnosis", False, "; ".join(MISTAKES[m] for m in found))
    return report
