"""Checks for the graded assignments in ``assignments/source/``.

Hidden tests draw new shapes and values from a seed (so hard-coded answers fail), and a network's
gradients are checked by name.
"""

import copy
import math

import torch
import torch.nn.functional as F

from ..models import NeuralNet
from ..train import evaluate, train_epoch
from .autograd import is_function_class
from .function import check_gradcheck
from .report import TOLERANCE, Report, compare, raised


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

    For each case: the output against ``input @ weight + bias`` (``apply(input, weight)`` when
    there is no bias), then each gradient against finite differences of ``fn``'s own forward
    (``check_gradcheck``). Hard-coded shapes or numbers cannot pass a fresh seed.
    """
    if not is_function_class(fn):
        raise TypeError(f"check_linear_random: expected a torch.autograd.Function class, got {fn!r}")
    report = Report(f"check_linear_random(seed={seed})")
    for case, x, w, b in _random_linear_cases(seed, n_cases):
        inputs = tuple(t for t in (x, w, b) if t is not None)
        try:
            out = fn.apply(*inputs)
        except Exception as e:
            raised(report, f"output ({case})", e)
            continue
        if not compare(f"output ({case})", out, F.linear(x, w.t(), b), report):
            continue
        names = ("input", "weight", "bias")[:len(inputs)]
        lines = check_gradcheck(fn, [t.clone().requires_grad_() for t in inputs], names, seed).lines
        for line in lines:
            line.name = f"gradient of {line.name} ({case})" if line.name != "backward" else f"backward ({case})"
        report.lines += lines
    return report


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


class _Recorder(torch.nn.Module):
    """Notes, in buffers, whether each forward ran in training mode and with gradients on.

    Buffers travel with the model's ``state_dict``, so the notes come back even when the student's
    function ran in another process (the autograder's sandbox) on a copy of the model.
    """

    def __init__(self, capacity: int = 64):
        super().__init__()
        self.register_buffer("calls", torch.full((capacity, 2), -1, dtype=torch.int8))

    def record(self) -> None:
        note = torch.tensor([self.training, torch.is_grad_enabled()], dtype=torch.int8)
        with torch.no_grad():
            free = (self.calls[:, 0] < 0).nonzero()
            if len(free):
                self.calls[free[0, 0]] = note

    def modes(self) -> list:
        """``[(training, grad enabled)]``, one pair per forward call."""
        return [(bool(t), bool(g)) for t, g in self.calls.tolist() if t >= 0]


class _RecordingNet(NeuralNet):
    """The course's ``NeuralNet`` that records the mode of every forward call, and halves its
    logits in eval mode.

    Graded, the notes are written in the student's process and could be forged; the halved logits
    make the mode show in what the grader checks itself: trained in eval mode, the loss and the
    weights differ from the reference's, whatever the notes say.
    """

    def __init__(self, num_units: int):
        super().__init__(num_units)
        self.recorder = _Recorder()

    def forward(self, x):
        self.recorder.training = self.training
        self.recorder.record()
        logits = super().forward(x)
        return logits if self.training else 0.5 * logits


def check_train_epoch(fn, seed: int = 0, lr: float = 0.05) -> Report:
    """Check ``fn(model, batches, optimizer) -> loss`` trains one epoch as ``course_lib.train`` does.

    A small ``NeuralNet`` trains on three batches (the last one short) beside a copy trained by
    ``course_lib.train.train_epoch``: per batch cross-entropy, ``zero_grad``, ``backward``,
    ``step``, in training mode. The returned loss must be the mean over every sample.
    """
    report = Report("check_train_epoch")
    batches = _toy_mnist_batches(seed)
    with torch.random.fork_rng(devices=[]):  # leave the caller's random stream untouched
        torch.manual_seed(seed)
        model = _RecordingNet(16)
    initial = copy.deepcopy(model.state_dict())
    reference = copy.deepcopy(model)
    ref_loss, _, _ = train_epoch(reference, batches, torch.optim.SGD(reference.parameters(), lr=lr, momentum=0.9))
    model.eval()  # the function must switch to training mode itself
    try:
        loss = fn(model, iter(batches), torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9))
    except Exception as e:
        return raised(report, "train_epoch", e)
    modes = [training for training, _ in model.recorder.modes()]
    if not modes:
        report.add("training mode", False, "the model never ran: call model(images) for each batch")
    else:
        report.add("training mode", all(modes), "model.train() was called" if all(modes)
                   else "the model ran in eval mode: call model.train() first")
    report.add("batches", len(modes) == len(batches), f"the model ran {len(modes)} times for "
               f"{len(batches)} batches" + ("" if len(modes) == len(batches) else ": once per batch"))
    _loss_line(report, loss, ref_loss, sum(len(y) for _, y in batches))
    params = [(name, p) for name, p in model.named_parameters()]
    if all(torch.equal(p.detach(), initial[name]) for name, p in params):
        report.add("parameters", False, "unchanged: call optimizer.step() after loss.backward() for each batch")
        return report
    hint = "Per batch: optimizer.zero_grad(), forward, F.cross_entropy, loss.backward(), optimizer.step()."
    for (name, got), expected in zip(params, reference.parameters()):
        compare(name, got, expected, report, hint=hint)
    return report


def _loss_line(report: Report, loss, ref_loss: float, n_samples: int) -> None:
    number = _number(loss)
    if number is None:
        report.add("loss returned", False, f"returned {type(loss).__name__}, expected the mean loss as a number")
    elif math.isclose(number, ref_loss, rel_tol=1e-4):
        report.add("loss returned", True, f"{number:.5g}, the mean over all {n_samples} samples")
    else:
        report.add("loss returned", False, f"{number:.5g}, expected {ref_loss:.5g}: the cross-entropy averaged "
                   "over every sample (weight each batch's mean loss by its size)")


class _Predicts(_Recorder):
    """A "classifier" that predicts the class written in each image's first pixel in eval mode
    without gradients, and the one in its second pixel otherwise; it records whether it ran in
    training mode and with gradients on.

    Graded, the notes are written in the student's process and could be forged; the other
    predictions make the mode show in the accuracy, which the grader checks itself.
    """

    def forward(self, images):
        self.record()
        pixel = int(self.training or torch.is_grad_enabled())
        return F.one_hot(images[:, 0, 0, pixel].long(), 10).float()


def _accuracy_batches(sizes, correct, correct_in_wrong_mode):
    """Batches on which ``_Predicts`` gets ``correct[i]`` of batch i right in eval mode without
    gradients, and ``correct_in_wrong_mode[i]`` otherwise."""
    batches = []
    for n, k, k_wrong in zip(sizes, correct, correct_in_wrong_mode):
        labels = torch.arange(n) % 10
        images = torch.zeros(n, 1, 28, 28)
        for pixel, right in ((0, k), (1, k_wrong)):
            images[:, 0, 0, pixel] = torch.where(torch.arange(n) < right, labels, (labels + 1) % 10).float()
        batches.append((images, labels))
    return batches


def _accuracy_hint(number: float, batches, correct, expected: float) -> str:
    """The usual mistake that gives ``number``, or ``""``."""
    hints = {sum(correct): "A count: divide by the number of samples",
             100 * expected: "A percentage: return a fraction in [0, 1]",
             sum(k / len(y) for k, (_, y) in zip(correct, batches)) / len(batches):
                 "A mean of the batch accuracies: count correct predictions over every sample"}
    return next((h for value, h in hints.items() if math.isclose(number, value, rel_tol=1e-6)), "")


def check_evaluate_accuracy(fn) -> Report:
    """Check ``fn(model, batches) -> accuracy``: correct predictions over every sample, as a
    fraction, in eval mode and without gradients (compared with ``course_lib.train.evaluate``),
    on two sets of batches (so a constant answer fails)."""
    report = Report("check_evaluate_accuracy")
    correct, wrong_mode = [8, 4, 0], [3, 6, 1]  # of batches of 8, 8 and 2: a mean of the batch means says 50%
    batches = _accuracy_batches((8, 8, 2), correct, wrong_mode)
    second = _accuracy_batches((5, 7, 3), (5, 1, 2), (0, 3, 3))
    expected, expected_second = evaluate(_Predicts(), batches)[1], evaluate(_Predicts(), second)[1]
    model = _Predicts().train()
    try:
        got = fn(model, iter(batches))
        got_second = fn(model.train(), iter(second))
    except Exception as e:
        return raised(report, "accuracy", e)
    number = _number(got)
    if number is None:
        report.add("accuracy", False, f"returned {type(got).__name__}, expected a number in [0, 1]")
    elif math.isclose(number, expected, rel_tol=1e-6):
        report.add("accuracy", True, f"{number:.4f} ({sum(correct)} of {sum(len(y) for _, y in batches)} correct)")
    else:
        n = sum(len(y) for _, y in batches)
        hint = (_accuracy_hint(number, batches, correct, expected)
                or _accuracy_hint(number, batches, wrong_mode, sum(wrong_mode) / n))
        if math.isclose(number, sum(wrong_mode) / n, rel_tol=1e-6):
            hint = "This model predicts otherwise in training mode or with gradients on (see below)"
        report.add("accuracy", False, f"{number:.4g}, expected {expected:.4f}. {hint}".strip())
    if number is not None and math.isclose(number, expected, rel_tol=1e-6):
        other = _number(got_second)
        report.add("accuracy, other batches", other is not None and math.isclose(other, expected_second, rel_tol=1e-6),
                   f"{other}, expected {expected_second:.4f}: compute it from the batches given")
    calls = model.modes()
    if not calls:
        report.add("model called", False, "the model never ran: call model(images) for each batch")
        return report
    report.add("eval mode", not any(t for t, _ in calls), "model.eval() was called" if not any(t for t, _ in calls)
               else "the model ran in training mode: call model.eval() first")
    report.add("no gradients", not any(g for _, g in calls), "ran under torch.no_grad()" if not any(g for _, g in calls)
               else "gradients were recorded: evaluate inside `with torch.no_grad():`")
    return report
