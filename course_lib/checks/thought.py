"""Checks for the exercises that need a derivation or a bug hunt (lessons 6, 9, 10 and 11).

Each check compares the student's answer with autograd on fresh float64 inputs and says, in
words, which part is wrong. None of them names the bug an exercise hides: they report what the
answer does, not what the lesson's buggy code did.
"""

import torch

from .report import Report, as_number, compare, raised, random_float64


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


def check_init_std(fn, seed: int = 0) -> Report:
    """Check ``fn(n_in, negative_slope) -> std``: the standard deviation of zero-mean normal
    weights that keeps the activations' root mean square steady through ``Linear(n_in, ...)``
    followed by ``LeakyReLU(negative_slope)`` (a slope of 0 is a ReLU).

    The answer is ``sqrt(2 / ((1 + a^2) n_in))``: a layer multiplies the second moment by
    ``n_in Var(w)``, and LeakyReLU keeps ``(1 + a^2) / 2`` of it. A last line runs a 20-layer
    stack of width 256 initialised with the answer for a slope of 0.2 and reports how the RMS
    changed between its first and its last layer.
    """
    import math

    report = Report("check_init_std")
    for n_in, a in ((256, 0.0), (784, 0.0), (128, 0.2), (64, 0.5), (100, 1.0)):
        name = f"n_in={n_in}, slope {a:g}"
        right = math.sqrt(2 / ((1 + a * a) * n_in))
        try:
            got = float(as_number(fn(n_in, a)))  # a number or a one-element tensor
        except Exception as e:
            raised(report, name, e)
            continue
        if math.isclose(got, right, rel_tol=1e-6):
            report.add(name, True, f"std {got:.6g}")
            continue
        hint = "a layer multiplies the second moment by n_in Var(w); what fraction of it does the activation keep?"
        if math.isclose(got, right * right, rel_tol=1e-6):
            hint = "that is the variance: return the standard deviation"
        elif math.isclose(got, math.sqrt(1 / n_in), rel_tol=1e-6):
            hint = ("that keeps the second moment of the layer's output, but the activation then keeps "
                    "only part of it")
        elif a > 0 and math.isclose(got, math.sqrt(2 / n_in), rel_tol=1e-6):
            hint = "that is ReLU's answer: LeakyReLU's negative side keeps a^2 of its half of the second moment"
        report.add(name, False, f"std {got:.6g}, expected {right:.6g}: {hint}")
    if not report.passed:
        return report
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(512, 256, generator=g, dtype=torch.float64)
    rms, std = [], float(fn(256, 0.2))
    for _ in range(20):
        w = torch.randn(256, 256, generator=g, dtype=torch.float64) * std
        h = torch.nn.functional.leaky_relu(h @ w, 0.2)
        rms.append(h.pow(2).mean().sqrt().item())
    ratio = rms[-1] / rms[0]
    report.add("20 layers, slope 0.2", 0.8 < ratio < 1.25,
               f"RMS after layer 20 / after layer 1: {ratio:.2f} (1 would be perfectly steady)")
    return report


def check_module_list(cls, seed: int = 0) -> Report:
    """Check ``cls(sizes)``: Linear layers of widths ``sizes`` (input first) with a ReLU between
    each pair, every layer's parameters registered, so that an optimizer, ``state_dict`` and
    ``.double()`` reach all of them."""
    from torch import nn

    from course_lib.layers import Linear

    report = Report("check_module_list")
    sizes = [6, 5, 4, 3]
    expected = sum(a * b + b for a, b in zip(sizes, sizes[1:]))
    torch.manual_seed(seed)
    x = torch.randn(7, sizes[0])
    try:
        model = cls(list(sizes))
        y = model(x)
    except Exception as e:
        return raised(report, "build and run", e)
    found = sum(p.numel() for p in model.parameters())
    report.add("parameters", found == expected,
               f"model.parameters() holds {found} numbers, the layers of widths {sizes} have {expected}: "
               "an optimizer updates only what parameters() holds")
    layers = [m for m in model.modules() if isinstance(m, (Linear, nn.Linear))]
    if len(layers) == len(sizes) - 1:
        h = x
        for i, layer in enumerate(layers):
            h = layer(h)
            h = h.relu() if i < len(layers) - 1 else h
        compare("forward", y, h, report, hint="each layer in turn, a ReLU between each pair and none after the last")
    else:
        report.add("forward", False, f"the model's modules() reach {len(layers)} of its {len(sizes) - 1} layers")
    try:
        torch.manual_seed(seed + 1)
        fresh = cls(list(sizes))
        fresh.load_state_dict(model.state_dict())
        same = torch.equal(fresh(x), model(x))
        report.add("state_dict", same, "a fresh model loaded from state_dict() gives the same output" if same else
                   f"a fresh model loaded from state_dict() gives a different output: it saved only "
                   f"{', '.join(model.state_dict()) or 'nothing'}")
    except Exception as e:
        raised(report, "state_dict", e)
    try:
        out = model.double()(x.double())
        report.add(".double()", out.dtype == torch.float64, f"output {out.dtype}")
    except Exception as e:
        raised(report, ".double()", e)
    return report
