"""Checks for the exercises that end each lesson notebook.

``exercise`` runs a check on the student's answer. While that answer is still the stub raising
``NotImplementedError``, it reports NOT ATTEMPTED (and, given the lesson's solution, makes sure
that one passes, so a broken lesson cannot hide behind an unwritten answer).
"""

import copy
import itertools
import functools
import math

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from .core import Report, _is_function_class, _raised, check_sgd_step, compare


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

    # Only a Function that defines setup_context has it wrapped: torch reads an overridden
    # setup_context as "forward takes no ctx", which would break an old-style Function.
    if answer.setup_context is not torch.autograd.Function.setup_context:
        Guarded.setup_context = staticmethod(guard(answer.setup_context))
    Guarded.__name__ = Guarded.__qualname__ = answer.__name__
    return Guarded


class NotAttempted(Report):
    """The report of an exercise whose answer is still the stub: it never passes."""

    def __str__(self) -> str:
        rows = [f"{self.title}: NOT ATTEMPTED"]
        rows += [f"  {line.detail}" for line in self.lines]
        return "\n".join(rows)

    __repr__ = __str__


def exercise(check, answer, solution=None, **kwargs) -> Report:
    """``check(answer)``, or a NOT ATTEMPTED report while the student's answer is still the stub.

    The answer counts as not written yet when it raised ``NotImplementedError`` and no line of
    its report passed. ``solution``, when given, is checked too, silently: a lesson whose own
    solution fails its check raises ``AssertionError`` (that is a bug in the lesson). ``kwargs``
    go to ``check`` (e.g. ``forward=`` and ``shapes=`` for ``check_backward``).
    """
    if solution is not None:
        check(solution, **kwargs).raise_if_failed()
    seen = []
    report = check(_watch_for_stub(answer, seen), **kwargs)
    if not seen or any(line.passed for line in report.lines):
        return report
    name = getattr(answer, "__name__", "your answer")
    stub = NotAttempted(getattr(check, "__name__", "check"))
    stub.add("stub", False, f"{name} still raises NotImplementedError: replace it with your code, "
                            "then run this cell again.")
    return stub


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
        _compare_gradient(f"gradient of input {i}", gv, ev, report)
    return report


def _factor_hint(got: torch.Tensor, expected: torch.Tensor) -> str:
    """Name a constant factor between a wrong gradient and the right one (sign, 2, N, 1/N)."""
    mask = expected.abs() > 1e-12
    if got.shape != expected.shape or not mask.any():
        return ""
    ratios = got[mask] / expected[mask]
    c = ratios.mean().item()
    if not torch.allclose(ratios, torch.full_like(ratios, c), rtol=1e-6, atol=1e-9):
        return ""
    n = expected.numel()
    named = [(-1.0, "the sign is flipped"),
             (0.5, "exactly half the expected gradient: a factor 2 is missing "
                   "(d/dp of (p - t)^2 is 2 (p - t))"),
             (2.0, "exactly twice the expected gradient: a factor 2 too many")]
    if n > 2:
        named += [(float(n), f"exactly N = {n} times the expected gradient: the 1/N of the mean "
                             "is missing"),
                  (1.0 / n, f"exactly 1/N = 1/{n} of the expected gradient: divided by N once "
                            "too often")]
    for value, words in named:
        if math.isclose(c, value, rel_tol=1e-6):
            return words
    return f"a constant {c:.4g} times the expected gradient: look for a wrong factor"


def _compare_gradient(name: str, got, expected: torch.Tensor, report: Report) -> None:
    """``compare``, plus: a wrong dtype is named as such, a constant factor is named."""
    if isinstance(got, torch.Tensor) and got.shape == expected.shape and got.dtype != expected.dtype:
        close = torch.allclose(got.detach().to(expected.dtype), expected, rtol=1e-4, atol=1e-6)
        report.add(f"{name} dtype", False, f"{got.dtype}, expected {expected.dtype} like the "
                   "inputs: compute in the inputs' dtype (no .float(), no float32 constants)"
                   + ("; the values are right to float32 precision" if close else ""))
        if close:
            return
    if not compare(name, got, expected, report):
        hint = _factor_hint(got.detach().to(expected.dtype), expected) if (
            isinstance(got, torch.Tensor) and got.is_floating_point()) else ""
        if hint:
            report.lines[-1].detail += f" It is {hint}."


class _OutOfPlaceWatch(TorchFunctionMode):
    """Notes whether an out-of-place op took one of ``params`` and their gradients as operands."""

    def __init__(self, params):
        super().__init__()
        self.ids = {id(p) for p in params}
        self.out_of_place = False

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if (name in ("sub", "__sub__", "add", "__add__", "__rsub__")
                and any(id(a) in self.ids for a in args)):
            self.out_of_place = True
        return func(*args, **(kwargs or {}))


def _sgd_detail(before, after, grad, lr, rebound: bool) -> str:
    """Why one parameter is not ``before - lr * grad``, in words."""
    if torch.allclose(after, before) and grad.abs().max() > 0:
        if rebound:
            return ("unchanged: `p = p - lr * p.grad` makes a new tensor and rebinds the name p; "
                    "update the parameter itself, in place (`p -= ...` inside torch.no_grad())")
        return "unchanged: this parameter was never stepped"
    if torch.allclose(after, before + lr * grad, rtol=1e-5, atol=1e-7):
        return "moved along the gradient (before + lr * grad): a step goes against it"
    if torch.allclose(after, before - 2 * lr * grad, rtol=1e-5, atol=1e-7):
        return "stepped twice: look for a repeated update line"
    err = (after - (before - lr * grad)).abs().max().item()
    return f"differs from before - lr * grad by up to {err:.3g}"


def check_sgd_update(fn, lr: float = 0.1, seed: int = 0) -> Report:
    """Check ``fn(params, lr)`` steps each parameter once, in place, then clears its gradient.

    ``params`` is a list of ``nn.Parameter`` whose ``.grad`` is filled in, as after
    ``loss.backward()``; afterwards each must equal ``before - lr * grad`` and its ``.grad`` be
    zero or ``None``. A step that goes the wrong way, twice, or only into a new tensor is named.
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
    watch = _OutOfPlaceWatch(params.values())
    try:
        with watch:
            fn(list(params.values()), lr)
    except Exception as e:
        return _raised(Report("check_sgd_update"), "step", e)
    after = {n: p.detach() for n, p in params.items()}
    report = check_sgd_step(before, after, grads, lr)
    report.title = "check_sgd_update"
    for line in report.lines:
        if not line.passed and line.name in grads:
            line.detail = _sgd_detail(before[line.name], after[line.name], grads[line.name], lr,
                                      watch.out_of_place)
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
    from ..models import CustomModel  # imported here: the checks sit above the library

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
    from ..layers import Linear, ScaledReLU

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


# -- checks of the exercises that need a derivation the lesson does not print -------------------


def _float64(*shapes, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]


def check_fold_scale_shift(fn, seed: int = 0) -> Report:
    """Check ``fn(weight, bias, scale, shift) -> (weight2, bias2)`` folds a per-output scale and
    shift into the layer: ``(x W + b) * scale + shift == x W2 + b2`` for every ``x``."""
    report = Report("check_fold_scale_shift")
    w, b, s, t, x = _float64((5, 3), (3,), (3,), (3,), (4, 5), seed=seed)
    try:
        got = fn(w.clone(), b.clone(), s.clone(), t.clone())
        w2, b2 = got
    except Exception as e:
        return _raised(report, "fold", e)
    compare("weight", w2, w * s, report, hint="Which entries of the weight feed output j, the one its scale multiplies?")
    compare("bias", b2, b * s + t, report, hint="What happens to the old bias when the output is scaled?")
    if report.passed:
        compare("outputs for a batch", x @ w2 + b2, (x @ w + b) * s + t, report)
    return report


def check_torch_layout_backward(fn, seed: int = 0) -> Report:
    """Check ``fn(grad_output, x, weight, bias) -> (grad_input, grad_weight, grad_bias)`` for
    ``y = x @ weight.T + bias`` with ``nn.Linear``'s layout: weight ``(out, in)``, bias ``(out,)``;
    ``x`` may have any number of leading dimensions; ``bias`` may be ``None``."""
    report = Report("check_torch_layout_backward")
    hints = ("grad_input has x's shape: which product of G and weight gives it?",
             "grad_weight has weight's shape (out, in), and every row of every leading dimension "
             "contributes to it.",
             "grad_bias has shape (out,): which dimensions of G must disappear, and how?")
    for case, shapes, with_bias in [("batch", ((4, 5), (3, 5), (3,)), True),
                                    ("3-D input", ((2, 4, 5), (3, 5), (3,)), True),
                                    ("no bias", ((4, 5), (3, 5), (3,)), False)]:
        x, w, b = _float64(*shapes, seed=seed)
        b = b if with_bias else None
        leaves = [t.clone().requires_grad_() if t is not None else None for t in (x, w, b)]
        out = F.linear(*leaves)
        g = _float64(tuple(out.shape), seed=seed + 1)[0]
        out.backward(g)
        try:
            got = fn(g.clone(), x.clone(), w.clone(), None if b is None else b.clone())
            if not isinstance(got, (tuple, list)) or len(got) != 3:
                raise TypeError(f"expected a tuple of 3 gradients, got {type(got).__name__}")
        except Exception as e:
            _raised(report, f"backward ({case})", e)
            continue
        for name, gv, leaf, hint in zip(("grad_input", "grad_weight", "grad_bias"), got, leaves, hints):
            if leaf is None:
                report.add(f"{name} ({case})", gv is None, "None, as there is no bias" if gv is None
                           else "expected None when there is no bias")
            else:
                compare(f"{name} ({case})", gv, leaf.grad, report, hint=hint)
    return report


def check_relu_mlp_gradients(fn, seed: int = 0) -> Report:
    """Check ``fn(x, target, w1, b1, w2, b2) -> (gw1, gb1, gw2, gb2)``, the gradients of
    ``L = mse(relu(x @ w1 + b1) @ w2 + b2, target)`` written by hand (run without autograd)."""
    report = Report("check_relu_mlp_gradients")
    tensors = _float64((6, 4), (6, 2), (4, 5), (5,), (5, 2), (2,), seed=seed)
    leaves = [t.clone().requires_grad_(i >= 2) for i, t in enumerate(tensors)]
    x, target, w1, b1, w2, b2 = leaves
    F.mse_loss(torch.relu(x @ w1 + b1) @ w2 + b2, target).backward()
    try:
        with torch.no_grad():  # by hand: autograd records nothing here
            got = fn(*(t.clone() for t in tensors))
        if not isinstance(got, (tuple, list)) or len(got) != 4:
            raise TypeError(f"expected a tuple of 4 gradients, got {type(got).__name__}")
    except Exception as e:
        return _raised(report, "gradients", e)
    hints = {"w1": "Pass the gradient upstream one step at a time: into layer 2's input, through "
                   "the ReLU (what is its derivative where its input is negative?), then to w1.",
             "b1": "It comes from the same gradient as w1's, at the ReLU's input."}
    for name, gv, leaf in zip(("w1", "b1", "w2", "b2"), got, leaves[2:]):
        _compare_gradient(f"dL/d{name}", gv, leaf.grad, report)
        if not report.lines[-1].passed and name in hints:
            report.lines[-1].detail += " " + hints[name]
    return report


def _codes(values, column):
    """-1 for a hyperparameter's first (sorted) value, +1 for its second."""
    low, high = sorted(set(values))
    return [(-1 if v == low else 1) for v in column]


def check_interaction(fn) -> Report:
    """Check ``fn(runs, a, b, metric)`` returns the two-way interaction of ``a`` and ``b``:
    the mean ``metric`` where their codes agree minus the mean where they differ (each value
    coded -1 for the smaller, +1 for the larger), on a made-up run log with known effects."""
    import pandas as pd

    report = Report("check_interaction")
    grid = {"lr": [0.01, 0.03], "optimizer": ["adam", "sgd"], "num_units": [32, 128]}
    rows = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    runs = pd.DataFrame(rows * 2)  # every combination twice
    c = {n: pd.Series(_codes(grid[n], runs[n])) for n in grid}
    # main effects 0.10 (lr), -0.30 (optimizer); lr x optimizer interaction -0.20; noise-free
    runs["final_val_acc"] = 0.6 + 0.05 * c["lr"] - 0.15 * c["optimizer"] - 0.1 * c["lr"] * c["optimizer"]
    runs["test_acc"] = 0.5 + 0.02 * c["num_units"] * c["lr"]
    for a, b, metric, expected in [("lr", "optimizer", "final_val_acc", -0.2),
                                   ("optimizer", "lr", "final_val_acc", -0.2),
                                   ("lr", "num_units", "test_acc", 0.04),
                                   ("optimizer", "num_units", "final_val_acc", 0.0)]:
        label = f"{a} x {b} on {metric}"
        try:
            got = fn(runs.copy(), a, b, metric)
            got = float(got)
        except Exception as e:
            _raised(report, label, e)
            continue
        if math.isclose(got, expected, abs_tol=1e-9):
            report.add(label, True, f"{got:+.3f}")
            continue
        hint = ""
        if expected and math.isclose(got, expected / 2, abs_tol=1e-9):
            hint = " That is half of it: an effect is a difference of two means, not a half-difference."
        elif expected and math.isclose(got, -expected, abs_tol=1e-9):
            hint = " The sign is flipped: code the smaller (first sorted) value -1."
        report.add(label, False, f"{got:+.4f}, expected {expected:+.4f}.{hint}")
    return report


def _confounded(points: list, names: list) -> list:
    """Pairs (main effect, other main effect or two-way interaction) with the same +-1 column."""
    grid = {n: sorted({p[n] for p in points}) for n in names}
    col = {n: torch.tensor(_codes(grid[n], [p[n] for p in points]), dtype=torch.float64) for n in names}
    effects = dict(col)
    effects.update({f"{a} x {b}": col[a] * col[b] for a, b in itertools.combinations(names, 2)})
    clashes = []
    for main in names:
        for other, column in effects.items():
            if other != main and main not in other.split(" x ") and (col[main] @ column).item() != 0:
                clashes.append((main, other))
    return clashes


def check_design(fn, max_runs: int = 16) -> Report:
    """Check ``fn(grid) -> list of settings dicts`` for six two-valued hyperparameters: at most
    ``max_runs`` runs, values from the grid, and every main effect unconfounded with every other
    main effect and every two-way interaction (each pair of +-1 columns orthogonal)."""
    report = Report("check_design")
    grid = {"lr": [0.01, 0.03], "num_units": [32, 128], "batch_size": [64, 128],
            "optimizer": ["sgd", "adam"], "shift": [0, 1], "momentum": [0.0, 0.9]}
    try:
        points = list(fn({k: list(v) for k, v in grid.items()}))
    except Exception as e:
        return _raised(report, "design", e)
    names = list(grid)
    bad = [p for p in points if not isinstance(p, dict) or set(p) != set(names)
           or any(p[n] not in grid[n] for n in names)]
    report.add("settings", bool(points) and not bad, f"{len(points)} runs, values from the grid"
               if points and not bad else f"each run must be a dict of all six hyperparameters "
               f"with values from the grid; first bad one: {bad[0] if bad else 'no runs at all'}")
    if not report.passed:
        return report
    report.add("size", len(points) <= max_runs, f"{len(points)} runs" + (
        "" if len(points) <= max_runs else f", at most {max_runs} asked (the whole grid is 64)"))
    unbalanced = [n for n in names if 2 * sum(p[n] == grid[n][0] for p in points) != len(points)]
    report.add("balance", not unbalanced, "each value in half the runs" if not unbalanced else
               f"{', '.join(unbalanced)}: the two values are not in half of the runs each")
    clashes = _confounded(points, names)
    report.add("main effects clear", not clashes, "no main effect is confounded with another "
               "main effect or a two-way interaction" if not clashes else
               "; ".join(f"{m} is confounded with {o}" for m, o in clashes[:3])
               + (f" (and {len(clashes) - 3} more)" if len(clashes) > 3 else ""))
    return report


def check_rms_norm(cls, features: int = 5, eps: float = 1e-6) -> Report:
    """Check ``cls(features)`` is an ``nn.Module`` computing ``x / sqrt(mean(x^2) + eps) * gain``
    over the last dimension, with ``gain`` a registered parameter of shape ``(features,)``
    starting at ones, that training can move."""
    report = Report("check_rms_norm")
    try:
        module = cls(features).double()
    except Exception as e:
        return _raised(report, "construction", e)
    params = dict(module.named_parameters())
    shapes = {n: tuple(p.shape) for n, p in params.items()}
    ok = len(params) == 1 and list(shapes.values()) == [(features,)]
    report.add("parameters", ok, f"{shapes}" if ok else f"got {shapes or 'none'}: register one "
               f"nn.Parameter of shape ({features},) (a plain tensor is invisible to optimisers)")
    if not ok:
        return report
    (gain,) = params.values()
    report.add("starts at ones", bool(torch.all(gain == 1)), "gain is all ones" if torch.all(gain == 1)
               else "initialise the gain to ones, so the module starts as a plain normalisation")
    x, new_gain = _float64((2, 3, features), (features,), seed=1)
    with torch.no_grad():
        gain.copy_(new_gain)
    try:
        out = module(x)
    except Exception as e:
        return _raised(report, "forward", e)
    expected = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps) * new_gain
    if compare("output (3-D input)", out, expected, report,
               hint="Normalise over the last dimension only (keepdim=True), then multiply by gain."):
        if out.requires_grad:
            out.sum().backward()
        moved = gain.grad is not None and bool(gain.grad.abs().sum() > 0)
        report.add("gradient reaches gain", moved, "yes" if moved else "gain.grad is empty: "
                   "compute the output from the parameter itself, not a detached copy")
    return report
