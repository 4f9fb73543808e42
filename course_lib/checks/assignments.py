"""Checks for the graded assignments in ``assignments/source/``.

Hidden tests draw new shapes and values from a seed (so hard-coded answers fail), and a network's
gradients are checked by name.
"""

import copy
import math

import torch
import torch.nn.functional as F

from .core import TOLERANCE, Report, _is_function_class, _raised, compare

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
    from ..models import NeuralNet  # imported here: the checks sit above the library
    from ..train import train_epoch

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
    from ..train import evaluate

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
