"""Checks for the exercises that need a derivation or a bug hunt (lessons 8, 9 and 10).

Each check compares the student's answer with autograd on fresh float64 inputs and says, in
words, which part is wrong. None of them names the bug an exercise hides: they report what the
answer does, not what the lesson's buggy code did.
"""

import torch

from .report import Report, compare, raised, random_float64


def check_in_place_function(fn, seed: int = 0) -> Report:
    """Check ``fn``, an autograd Function whose ``apply(x)`` is ReLU computed *in place* on ``x``.

    In place: ``fn.apply(x)`` returns ``x`` itself, its values clamped at 0. The gradient must be
    right both through the returned tensor and through the input's own name used afterwards
    (the input *is* the output now), with ``x`` a non-leaf tensor that needs a gradient.
    """
    report = Report("check_in_place_function")
    (a,) = random_float64((4, 5), seed=seed)
    a.requires_grad_()
    w = torch.arange(20, dtype=torch.float64).reshape(4, 5)
    expected_y = a.detach().clamp(min=0)
    expected_grad = w * (a.detach() > 0)
    try:
        x = a * 1.0  # a non-leaf input, as inside a network
        y = fn.apply(x)
    except Exception as e:
        return raised(report, "forward", e)
    report.add("in place", y is x, "returns its input, modified" if y is x else
               "returned a new tensor: modify x itself (x.clamp_) and return it")
    compare("forward", y, expected_y, report, hint="ReLU: max(x, 0)")
    try:
        (grad_y,) = torch.autograd.grad((y * w).sum(), a)
        compare("gradient through the output", grad_y, expected_grad, report,
                hint="the derivative of ReLU is 1 where the output is positive, else 0")
    except Exception as e:
        raised(report, "gradient through the output", e)
    try:
        x2 = a * 1.0
        fn.apply(x2)
        (grad_x,) = torch.autograd.grad((x2 * w).sum(), a)  # x2's own name, used after the call
        compare("gradient through the input's name", grad_x, expected_grad, report,
                hint="x itself holds the output now: does autograd know its values changed?")
    except Exception as e:
        raised(report, "gradient through the input's name", e)
    return report


def check_shared_layer_grads(fn, seed: int = 0) -> Report:
    """Check ``fn(x, W, b, G) -> (dW, db)``: the gradients of one Linear layer applied twice.

    ``H = X W + b`` and ``Y = H W + b``, the same ``W (n, n)`` and ``b (n,)`` both times, and
    ``G = dL/dY (B, n)``. The answer must equal autograd's ``dL/dW`` and ``dL/db``.
    """
    report = Report("check_shared_layer_grads")
    x, W, b, G = random_float64((6, 4), (4, 4), (4,), (6, 4), seed=seed)
    Wr, br = W.clone().requires_grad_(), b.clone().requires_grad_()
    y = (x @ Wr + br) @ Wr + br
    dW, db = torch.autograd.grad(y, (Wr, br), G)
    try:
        got = fn(x.clone(), W.clone(), b.clone(), G.clone())
        got_dW, got_db = got
    except Exception as e:
        return raised(report, "dW, db", e)
    H, G_H = x @ W + b, G @ W.T
    first_use_only = {"dW": x.T @ G_H, "db": G_H.sum(0)}
    second_use_only = {"dW": H.T @ G, "db": G.sum(0)}
    for name, answer, expected in (("dW", got_dW, dW), ("db", got_db, db)):
        if not compare(name, answer, expected, report) and isinstance(answer, torch.Tensor) \
                and answer.shape == expected.shape:
            for part, label in ((first_use_only, "the first use"), (second_use_only, "the second use")):
                if torch.allclose(answer.double(), part[name]):
                    report.lines[-1].detail += f": that is {label}'s share alone; the layer is used twice"
    return report


def check_registered_parameters(cls, seed: int = 0) -> Report:
    """Check ``cls(n_in, n_out)``: a module computing ``Y = (X W + b) * gain`` with a learnable
    ``gain (n_out,)`` starting at 1, whose every learnable tensor an optimizer, ``state_dict``,
    ``.to()`` and data parallelism can find."""
    report = Report("check_registered_parameters")
    torch.manual_seed(seed)
    try:
        model = cls(5, 3)
        x = torch.randn(4, 5)
        y = model(x)
    except Exception as e:
        return raised(report, "build and run", e)
    names = dict(model.named_parameters())
    gain = names.get("gain")
    report.add("parameters", gain is not None and sum(p.numel() for p in names.values()) == 5 * 3 + 3 + 3,
               f"named_parameters gives {sorted(names)}: an optimizer or DDP sees only these"
               + ("" if gain is not None else "; where is the gain?"))
    report.add("state_dict", "gain" in model.state_dict(),
               f"state_dict holds {sorted(model.state_dict())}: a checkpoint saves only these")
    if gain is None:
        return report
    compare("gain starts at 1", gain, torch.ones(3), report)
    before = y.detach().clone()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model(x).pow(2).sum().backward()
    optimizer.step()
    report.add("one SGD step", not torch.equal(gain.detach(), torch.ones(3)),
               "moved the gain" if not torch.equal(gain.detach(), torch.ones(3)) else "left the gain at 1")
    moved = model.double()(x.double())
    report.add(".double()", moved.dtype == torch.float64 and all(
        p.dtype == torch.float64 for p in model.parameters()) and before.shape == moved.shape,
        f"output {moved.dtype}, every parameter converted")
    return report




def check_rms_norm_backward(fn, seed: int = 0, eps: float = 1e-6) -> Report:
    """Check ``fn(x, g, G) -> (dx, dg)``: the gradients of RMSNorm by hand.

    ``Y = X / r * g`` with ``r = sqrt(mean(X^2) + eps)`` over the last dimension of ``X (B, n)``,
    a gain ``g (n,)`` and ``G = dL/dY (B, n)``; the answer must equal autograd's.
    """
    report = Report("check_rms_norm_backward")
    x, g, G = random_float64((5, 6), (6,), (5, 6), seed=seed)
    xr, gr = x.clone().requires_grad_(), g.clone().requires_grad_()
    y = xr / (xr.pow(2).mean(-1, keepdim=True) + eps).sqrt() * gr
    dx, dg = torch.autograd.grad(y, (xr, gr), G)
    try:
        got_dx, got_dg = fn(x.clone(), g.clone(), G.clone())
    except Exception as e:
        return raised(report, "dx, dg", e)
    r = (x.pow(2).mean(-1, keepdim=True) + eps).sqrt()
    if not compare("dx", got_dx, dx, report) and isinstance(got_dx, torch.Tensor) \
            and got_dx.shape == dx.shape and torch.allclose(got_dx.double(), G * g / r):
        report.lines[-1].detail += ": that treats r as a constant, but r depends on every x of its row"
    compare("dg", got_dg, dg, report, hint="g multiplies every row: its gradient sums over the batch")
    return report
