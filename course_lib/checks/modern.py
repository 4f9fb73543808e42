"""Checks for lesson 9's exercises: a Function in today's style, and vmap over parameters."""

import torch
import torch.nn.functional as F
from torch.func import grad, vmap

from .autograd import is_function_class
from .report import Report, compare, raised


def _inputs(seed: int):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(4, 5, generator=g, dtype=torch.float64) * 3
    x[0, :3] = torch.tensor([-30.0, 0.0, 30.0], dtype=torch.float64)  # both tails and the middle
    return x


def check_modern_function(fn, reference=F.softplus, derivative=torch.sigmoid, seed: int = 0) -> Report:
    """Check an autograd Function class written as ``forward`` + ``setup_context`` + ``backward``.

    ``fn.apply(x)`` must match ``reference(x)`` in value and gradient (``derivative(x)`` is
    ``d reference / dx``), run under ``torch.func.vmap`` (one sample at a time, and per-sample
    ``grad``), and support double backward. Defaults: softplus, whose derivative is sigmoid.
    """
    report = Report(f"check_modern_function({getattr(fn, '__name__', fn)!s})")
    if not is_function_class(fn):
        report.add("a Function class", False, f"expected a torch.autograd.Function class, got {fn!r}")
        return report
    x = _inputs(seed)
    leaf = x.clone().requires_grad_()
    try:
        y = fn.apply(leaf)
        (got_grad,) = torch.autograd.grad(y.sum(), leaf, create_graph=True)
    except Exception as e:
        return raised(report, "forward and backward", e)
    compare("value", y, reference(x), report)
    compare("gradient", got_grad, derivative(x), report, hint="backward returns grad_output * dy/dx")
    modern = fn.setup_context is not torch.autograd.Function.setup_context
    report.add("today's style", modern, "forward(x) + setup_context(ctx, inputs, output)" if modern
               else "forward(ctx, x) is the old style: move the ctx work into setup_context")
    try:
        compare("vmap", vmap(fn.apply)(x), reference(x), report)
        per_sample = vmap(grad(lambda row: fn.apply(row).sum()))(x)
        compare("per-sample grad", per_sample, derivative(x), report)
    except Exception as e:
        hint = " (add generate_vmap_rule = True)" if "vmap" in str(e) and modern else ""
        raised(report, "vmap", RuntimeError(f"{str(e).splitlines()[0]}{hint}"))
    try:
        ok = torch.autograd.gradgradcheck(fn.apply, (x[:2].clone().requires_grad_(),))
        report.add("double backward", ok, "gradgradcheck passes")
    except Exception as e:
        raised(report, "double backward", RuntimeError(str(e).splitlines()[0]))
    return report


def check_ensemble(fn, seed: int = 0) -> Report:
    """Check ``fn(x, weights, biases)`` runs ``K`` linear layers on one batch: ``(K, B, out)``.

    ``x`` is ``(B, in)``, ``weights`` ``(K, in, out)``, ``biases`` ``(K, out)``; model ``k``'s output
    is ``x @ weights[k] + biases[k]``.
    """
    report = Report(f"check_ensemble({getattr(fn, '__name__', 'fn')})")
    g = torch.Generator().manual_seed(seed)
    for k, b, n_in, n_out in ((3, 4, 5, 2), (1, 6, 3, 4), (5, 1, 2, 3)):
        x = torch.randn(b, n_in, generator=g, dtype=torch.float64)
        weights = torch.randn(k, n_in, n_out, generator=g, dtype=torch.float64)
        biases = torch.randn(k, n_out, generator=g, dtype=torch.float64)
        expected = torch.stack([x @ w + bias for w, bias in zip(weights, biases)])
        try:
            got = fn(x, weights, biases)
        except Exception as e:
            raised(report, f"{k} model{'s' * (k != 1)}, batch {b}", e)
            continue
        hint = "model k's output is x @ weights[k] + biases[k], stacked along a new first dimension"
        compare(f"{k} model{'s' * (k != 1)}, batch {b}", got, expected, report, hint=hint)
    return report
