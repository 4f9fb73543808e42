"""Checks of training: one SGD step taken by hand (lessons 4 and 5), the ``zero_grad``, forward,
loss, ``backward``, ``step`` of an optimizer (lesson 10), and the accuracy a run reaches."""

import copy
import math

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from ..models import CustomModel
from .report import Report, as_number, raised


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


CLOSE = {"rtol": 1e-5, "atol": 1e-7}  # an SGD step computed in another order still matches


def _sgd_diagnosis(before, after, grad, lr, copied=None, rebound: bool = False) -> str | None:
    """The one ladder of SGD diagnoses: ``None`` when ``after`` is ``before - lr * grad`` (one
    step), else why not, in words. ``copied``: the parameter as the step returned it (a copy
    updated instead of the parameter); ``rebound``: the step made new tensors out of place."""
    expected = before - lr * grad
    if torch.allclose(after, expected, **CLOSE):
        return None
    if isinstance(copied, torch.Tensor) and copied.shape == before.shape and \
            torch.allclose(copied.detach(), expected, **CLOSE):
        return ("updated a copy, not in place: the parameter itself is unchanged "
                "(write `param -= lr * grad` inside torch.no_grad())")
    if torch.allclose(after, before) and grad.abs().max() > 0:
        if rebound:
            return ("unchanged: `p = p - lr * p.grad` makes a new tensor and rebinds the name p; "
                    "update the parameter itself, in place (`p -= ...` inside torch.no_grad())")
        return "unchanged: this parameter was never stepped"
    if torch.allclose(after, before + lr * grad, **CLOSE):
        return "stepped uphill: subtract lr * grad, don't add it"
    if torch.allclose(after, before - 2 * lr * grad, **CLOSE):
        return "stepped twice: look for a repeated update line"
    err = (after - expected).abs().max().item()
    return f"differs from before - lr * grad by up to {err:.3g}"


def _add_step_lines(report: Report, before: dict, after: dict, grads: dict, lr: float,
                    returned: dict | None = None, rebound: bool = False) -> Report:
    """One line per parameter: stepped once, or ``_sgd_diagnosis``'s reason why not."""
    for name in before:
        grad = grads.get(name)
        if grad is None:
            report.add(name, False, "no gradient given for this parameter")
            continue
        copied = None if returned is None else returned.get(name)
        why = _sgd_diagnosis(before[name].detach(), after[name].detach(), grad, lr, copied, rebound)
        report.add(name, why is None, why or "stepped once")
    return report


def check_sgd_step(before: dict, after: dict, grads: dict, lr: float, returned: dict | None = None) -> Report:
    """Check every parameter took exactly one SGD step: ``after = before - lr * grad``.

    All three arguments map parameter names to tensors (copies taken before and after the step,
    and the gradients used). Catches a parameter stepped twice, or never; with ``returned`` (the
    dict of parameters as the step left it), a parameter replaced by an updated copy instead of
    changed in place.
    """
    return _add_step_lines(Report("check_sgd_step"), before, after, grads, lr, returned)


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
        return raised(Report("check_sgd_update"), "step", e)
    after = {n: p.detach() for n, p in params.items()}
    report = _add_step_lines(Report("check_sgd_update"), before, after, grads, lr,
                             rebound=watch.out_of_place)
    for name, p in params.items():
        cleared = p.grad is None or not p.grad.any()
        report.add(f"{name}.grad", cleared, "cleared" if cleared else
                   "still holds the gradient: zero it (or set it to None) after the step")
    return report


def _add_loss_line(report: Report, step: int, loss, expected: float) -> None:
    """Add the line for the loss a training step returned, against the reference step's."""
    loss = as_number(loss)
    if isinstance(loss, (int, float)) and not isinstance(loss, bool):
        ok = math.isclose(loss, expected, rel_tol=1e-5)
        report.add(f"loss returned (step {step})", ok, f"{loss:.6g}" if ok else
                   f"{loss:.6g}, expected {expected:.6g} (F.mse_loss before the step)")
    else:
        report.add(f"loss returned (step {step})", False,
                   f"returned {type(loss).__name__}, expected the loss as a number")


def check_train_step(fn, lr: float = 0.05, seed: int = 0) -> Report:
    """Check ``fn(model, inputs, targets, optimizer) -> loss`` makes one training step on MSE.

    Two steps run on a ``CustomModel`` beside a reference copy that does ``zero_grad``, forward,
    ``F.mse_loss``, ``backward``, ``step``; the second step catches gradients never zeroed.
    """
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
            return raised(report, f"step {step}", e)
        _add_loss_line(report, step, loss, ref_loss.item())
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


def _clipped_variants(model, x, y, lr: float, max_norm: float) -> dict:
    """Parameters after one MSE step from ``model``'s, for the right clipping and three wrong ones,
    with the right step's loss and global gradient norm (before clipping)."""
    results = {}
    for variant in ("right", "none", "per tensor", "always"):
        ref = copy.deepcopy(model)
        optimizer = torch.optim.SGD(ref.parameters(), lr=lr)
        optimizer.zero_grad()
        loss = F.mse_loss(ref(x), y)
        loss.backward()
        grads = [p.grad for p in ref.parameters()]
        norm = torch.nn.utils.clip_grad_norm_(ref.parameters(), math.inf).item()  # measures only
        if variant == "right":
            torch.nn.utils.clip_grad_norm_(ref.parameters(), max_norm)
        elif variant == "per tensor":
            for grad in grads:
                grad.mul_(min(1.0, max_norm / grad.norm().item()))
        elif variant == "always":
            for grad in grads:
                grad.mul_(max_norm / norm)
        optimizer.step()
        results[variant] = ([p.detach() for p in ref.parameters()], loss.item(), norm)
    return results


def _same_params(params, reference) -> bool:
    return all(torch.allclose(p, r, rtol=1e-5, atol=1e-6) for p, r in zip(params, reference))


CLIP_MISTAKES = {
    "none": "the gradients were not scaled: their global norm was {norm:.3g}, above max_norm = {max_norm:g}",
    "per tensor": "each gradient was clipped on its own: the norm is global, every parameter's gradient "
                  "together as one long vector, and one factor scales them all (that keeps the direction)",
    "always": "a gradient whose global norm ({norm:.3g}) is already within max_norm = {max_norm:g} must be "
              "left as it is: scale by min(1, max_norm / norm)",
}


def check_clipped_train_step(fn, max_norm: float = 1.0, lr: float = 0.05, seed: int = 0) -> Report:
    """Check ``fn(model, inputs, targets, optimizer, max_norm) -> (loss, norm)``: one MSE step whose
    gradients are first scaled down, all by one factor, to a global L2 norm of at most ``max_norm``.

    Two cases on a ``CustomModel``, each beside the grader's own copy stepped with
    ``torch.nn.utils.clip_grad_norm_``: targets far off (a large gradient, clipped) and targets
    close to the outputs (a small gradient, left alone). A wrong result is compared with the usual
    mistakes (no clipping, each tensor clipped on its own, scaling a small gradient up).
    """
    report = Report("check_clipped_train_step")
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(16, 4, generator=g)
    with torch.random.fork_rng(devices=[]):  # leave the caller's random stream untouched
        torch.manual_seed(seed)
        model = CustomModel(4, 8, 1)
    with torch.no_grad():
        outputs = model(x)
    cases = {"large gradient": outputs + 30.0 * torch.randn(16, 1, generator=g),
             "small gradient": outputs + 0.01 * torch.randn(16, 1, generator=g)}
    for case, y in cases.items():
        variants = _clipped_variants(model, x, y, lr, max_norm)
        right, ref_loss, ref_norm = variants["right"]
        student = copy.deepcopy(model)
        try:
            returned = fn(student, x.clone(), y.clone(), torch.optim.SGD(student.parameters(), lr=lr), max_norm)
        except Exception as e:
            return raised(report, case, e)
        if not (isinstance(returned, (tuple, list)) and len(returned) == 2):
            report.add(f"{case}: returned", False, f"{type(returned).__name__}, expected (loss, norm): "
                       "the loss before the step and the gradients' global norm before clipping")
            return report
        for what, got, expected in (("loss", returned[0], ref_loss), ("norm", returned[1], ref_norm)):
            got = as_number(got)
            ok = isinstance(got, (int, float)) and not isinstance(got, bool) and math.isclose(
                got, expected, rel_tol=1e-4)
            report.add(f"{case}: {what} returned", ok, f"{got:.6g}" if ok else f"{got!r}, expected {expected:.6g}")
        params = [p.detach() for p in student.parameters()]
        if _same_params(params, right):
            report.add(f"{case}: parameters after the step", True,
                       "clipped to max_norm" if ref_norm > max_norm else "left unclipped, as they should be")
            continue
        mistake = next((m for m, (result, _, _) in variants.items() if m != "right" and _same_params(params, result)), None)
        detail = (CLIP_MISTAKES[mistake].format(norm=ref_norm, max_norm=max_norm) if mistake else
                  "differ from one clipped SGD step: zero_grad, forward, loss, backward, scale every "
                  "gradient by min(1, max_norm / norm), step")
        report.add(f"{case}: parameters after the step", False, detail)
    return report


def check_accuracy(accuracy: float, threshold: float, what: str = "test accuracy") -> Report:
    """Check an accuracy (a fraction in [0, 1]) reaches ``threshold``."""
    report = Report("check_accuracy")
    ok = 0.0 <= accuracy <= 1.0 and accuracy >= threshold
    report.add(what, ok, f"{accuracy:.2%}, needed at least {threshold:.2%}")
    return report
