"""Checks for the graded assignments in ``assignments/source/`` (and lesson 7's exercises).

Hidden tests draw new shapes and values from a seed (so hard-coded answers fail), and a network's
gradients are checked by name. The grader owns every input it judges: a check hands the
student's code copies and computes its reference from its own snapshot taken before the call,
so what the code does to its arguments (zeroing them, stepping weights inside a backward) cannot
move the target; a check of an in-place update looks at exactly what should change, and at
what should not.
"""

import copy
import math

import torch
import torch.nn.functional as F

from ..models import NeuralNet
from ..train import evaluate, train_epoch
from .autograd import is_function_class, run_backward, run_forward
from .function import check_gradcheck
from .linear import report_gradients
from .report import TOLERANCE, Report, compare, raised
from .training import check_sgd_step


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
    params = [(name, p) for name, p in model.named_parameters()]
    if all(torch.equal(p.detach(), initial[name]) for name, p in params):  # say so before the loss
        report.add("parameters", False, "unchanged: call optimizer.step() after loss.backward() for each batch")
        _loss_line(report, loss, ref_loss, sum(len(y) for _, y in batches), trained=False)
        return report
    _loss_line(report, loss, ref_loss, sum(len(y) for _, y in batches))
    hint = "Per batch: optimizer.zero_grad(), forward, F.cross_entropy, loss.backward(), optimizer.step()."
    for (name, got), expected in zip(params, reference.parameters()):
        compare(name, got, expected, report, hint=hint)
    return report


def _loss_line(report: Report, loss, ref_loss: float, n_samples: int, trained: bool = True) -> None:
    number = _number(loss)
    if number is None:
        report.add("loss returned", False, f"returned {type(loss).__name__}, expected the mean loss as a number")
    elif math.isclose(number, ref_loss, rel_tol=1e-4):
        report.add("loss returned", True, f"{number:.5g}, the mean over all {n_samples} samples")
    elif not trained:
        report.add("loss returned", False, f"{number:.5g}, expected {ref_loss:.5g}: the model never trained "
                   "(see parameters), so every batch after the first saw other weights than expected")
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
    return _report_eval_modes(report, model.modes())


# --- Assignment 1: a Linear layer with nn.Linear's weight layout (out_features, in_features) ---

OUT_IN_HINTS = {
    "grad_input": "Shape (B, in_features), like input.",
    "grad_weight": "Shape (out_features, in_features), like weight (nn.Linear's layout).",
    "grad_bias": "Shape (out_features,), like bias: summed over the batch.",
}


def _out_in_cases(seed: int):
    """(name, input (B, n_in), weight (n_out, n_in), bias (n_out,) or None) in float64: for seed 0
    a batch of 4, a batch of 1 and no bias; for any other seed, shapes drawn from the seed."""
    if seed:
        return [(name, x, w.t().contiguous(), b) for name, x, w, b in _random_linear_cases(seed, 3)]
    g = torch.Generator().manual_seed(0)

    def r(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    return [("batch of 4", r(4, 5), r(3, 5), r(3)), ("batch of 1", r(1, 6), r(2, 6), r(2)),
            ("no bias", r(3, 4), r(5, 4), None)]


def _owned(tensors) -> list:
    """Copies for the student's code: what it does to them never reaches the grader's references."""
    return [None if t is None else t.detach().clone() for t in tensors]


def check_linear_out_in_forward(fn, seed: int = 0) -> Report:
    """Check a Linear ``Function`` class whose weight has nn.Linear's layout ``(n_out, n_in)``:
    ``fn.apply(x, weight, bias)`` (``apply(x, weight)`` without a bias) against ``F.linear``."""
    if not is_function_class(fn):
        raise TypeError(f"check_linear_out_in_forward: expected a torch.autograd.Function class, got {fn!r}")
    report = Report("check_linear_out_in_forward")
    for case, x, w, b in _out_in_cases(seed):
        expected = F.linear(x, w, b)  # computed before the student's code sees a copy
        try:
            got = fn.apply(*(t for t in _owned((x, w, b)) if t is not None))
        except Exception as e:  # report, don't crash the notebook
            raised(report, f"output ({case})", e)
            continue
        compare(f"output ({case})", got, expected, report,
                hint="Weight is (out_features, in_features)." if b is not None else "The bias is optional (None).")
    return report


def check_linear_out_in_backward(fn, seed: int = 0) -> Report:
    """Check the three gradients of that layer against autograd (through a ``FakeCtx``, so the raw
    shapes count), with every input needing a gradient, then with the input or the weight
    needing none (the data of a first layer, a frozen weight)."""
    if not is_function_class(fn):
        raise TypeError(f"check_linear_out_in_backward: expected a torch.autograd.Function class, got {fn!r}")
    report = Report("check_linear_out_in_backward")
    cases = _out_in_cases(seed)
    for case, x, w, b in cases:
        _out_in_case(report, fn, case, (x, w, b), (True, True, b is not None), seed)
    (_, x, w, b), (_, x1, w1, _) = cases[:2]
    _out_in_case(report, fn, "input needs no gradient", (x, w, b), (False, True, True), seed)
    _out_in_case(report, fn, "weight needs no gradient", (x1, w1, None), (True, False, False), seed)
    return report


def _out_in_case(report: Report, fn, case: str, tensors: tuple, needs: tuple, seed: int) -> None:
    leaves = [t.clone().requires_grad_(n) if t is not None else None for t, n in zip(tensors, needs)]
    ref = F.linear(*leaves)
    grad_output = torch.randn(ref.shape, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    ref.backward(grad_output)
    inputs = [t for t in _owned(tensors) if t is not None]  # apply(x, w) without a bias
    try:
        ctx, _ = run_forward(fn, inputs, needs[:len(inputs)])
        got = list(run_backward(fn, ctx, grad_output.clone(), len(inputs))) + [None] * (3 - len(inputs))
    except Exception as e:
        raised(report, f"backward ({case})", e)
        return
    report_gradients(report, got, leaves, needs, case, OUT_IN_HINTS)


# --- Assignment 2: an SGD step over a dict of parameters, judged on the grader's own snapshots ---

def check_sgd_step_dict(fn, params: dict, lr: float, seed: int = 0) -> Report:
    """Check ``fn(params, grads, lr)`` updates every parameter in place, once: ``p - lr * grad``.

    ``fn`` gets copies (``nn.Parameter``, as in training) and random gradients; the expected values
    come from the grader's snapshots taken before the call, so whatever ``fn`` does to its
    arguments cannot move the target. Only the parameters may change: their names stay, and the
    gradients are left as given (or zeroed after the step, a common habit).
    """
    report = Report("check_sgd_step")
    g = torch.Generator().manual_seed(seed)
    before = {name: p.detach().clone() for name, p in params.items()}
    grads = {name: torch.randn(p.shape, generator=g, dtype=p.dtype) for name, p in before.items()}
    given = {name: torch.nn.Parameter(p.clone()) for name, p in before.items()}
    given_grads = {name: grad.clone() for name, grad in grads.items()}
    originals = dict(given)
    try:
        fn(given, given_grads, lr)
    except Exception as e:
        return raised(report, "sgd_step", e)
    after = {name: p.detach() for name, p in originals.items()}
    report.lines += check_sgd_step(before, after, grads, lr, returned=given).lines
    if set(given) != set(before):
        report.add("params keys", False, f"sgd_step changed the names in params to {sorted(map(str, given))}, "
                   f"expected {sorted(before)}: update the values in place, keep the dict as it is")
    changed = [name for name, grad in grads.items()
               if not (isinstance(given_grads.get(name), torch.Tensor) and given_grads[name].shape == grad.shape
                       and (torch.equal(given_grads[name], grad) or not given_grads[name].any()))]
    report.add("gradients", not changed, "left as given (or zeroed)" if not changed else
               f"sgd_step changed grads[{changed[0]!r}]: only the parameters should change")
    return report


# --- Assignment 4: an epoch with gradient accumulation, and the top-k accuracy ---

def _grouped_reference(model, batches, accumulate: int, lr: float):
    """Train ``model`` as one step per group of ``accumulate`` batches on the group's mean loss
    (the group concatenated into one batch); return the mean loss over every sample and the mean
    of the per-batch mean losses (a usual mistake's answer)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    model.train()
    losses = []
    for start in range(0, len(batches), accumulate):
        group = batches[start:start + accumulate]
        per_sample = F.cross_entropy(model(torch.cat([x for x, _ in group])),
                                     torch.cat([y for _, y in group]), reduction="none")
        optimizer.zero_grad()
        per_sample.mean().backward()
        optimizer.step()
        losses += list(per_sample.detach().split([len(y) for _, y in group]))
    every = torch.cat(losses)
    return every.mean().item(), torch.stack([b.mean() for b in losses]).mean().item()


def check_train_epoch_accumulate(fn, accumulate: int = 2, seed: int = 0, lr: float = 0.05) -> Report:
    """Check ``fn(model, batches, optimizer, accumulate) -> loss``: one epoch in training mode that
    steps once per ``accumulate`` batches (and once for a last, shorter group), each step on the
    gradient of the mean cross-entropy over every sample of its group; the loss returned is the
    mean over every sample. Five batches (the fourth one short) train a small ``NeuralNet``
    beside the grader's reference, which steps on each group concatenated into one batch.
    """
    report = Report(f"check_train_epoch(accumulate={accumulate})")
    batches = _toy_mnist_batches(seed, sizes=(8, 8, 8, 5, 6))
    with torch.random.fork_rng(devices=[]):  # leave the caller's random stream untouched
        torch.manual_seed(seed)
        model = _RecordingNet(16)
    initial = copy.deepcopy(model.state_dict())
    reference = copy.deepcopy(model)
    ref_loss, batch_means = _grouped_reference(reference, batches, accumulate, lr)
    model.eval()  # the function must switch to training mode itself
    owned = [(x.clone(), y.clone()) for x, y in batches]
    try:
        loss = fn(model, iter(owned), torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9), accumulate)
    except Exception as e:
        return raised(report, "train_epoch", e)
    modes = [training for training, _ in model.recorder.modes()]
    report.add("training mode", bool(modes) and all(modes), "model.train() was called" if modes and all(modes)
               else "the model never ran: call model(images) for each batch" if not modes
               else "the model ran in eval mode: call model.train() first")
    report.add("batches", len(modes) == len(batches), f"the model ran {len(modes)} times for "
               f"{len(batches)} batches" + ("" if len(modes) == len(batches) else ": once per batch"))
    params = list(model.named_parameters())
    trained = not all(torch.equal(p.detach(), initial[name]) for name, p in params)
    if not trained:
        report.add("parameters", False, "unchanged: call optimizer.step() once per group of batches")
    _accumulated_loss_line(report, loss, (ref_loss, batch_means), sum(len(y) for _, y in batches), trained)
    if trained:
        hint = (f"One optimizer.step() per {accumulate} batches (and one for the last, shorter group), "
                "each on the gradient of the mean loss over the group's samples.")
        for (name, got), expected in zip(params, reference.parameters()):
            compare(name, got, expected, report, hint=hint)
    return report


def _accumulated_loss_line(report: Report, loss, expected: tuple, n_samples: int, trained: bool) -> None:
    number, (ref_loss, batch_means) = _number(loss), expected
    if number is None or math.isclose(number, ref_loss, rel_tol=1e-4):
        _loss_line(report, loss, ref_loss, n_samples)  # missing or right: the same line as one epoch's
    elif math.isclose(number, batch_means, rel_tol=1e-4) and trained:
        report.add("loss returned", False, f"{number:.5g}, expected {ref_loss:.5g}: the mean of the batches' mean "
                   "losses; weight each batch's mean loss by its size")
    else:
        report.add("loss returned", False, f"{number:.5g}, expected {ref_loss:.5g}: the cross-entropy averaged over "
                   "every sample, each computed before the step that follows it")


class _Ranks(_Recorder):
    """A "classifier" whose scores put each image's label at the rank written in its second pixel
    (0: the highest score) in eval mode without gradients, and at the rank in its third pixel
    otherwise; the label is in the first pixel. The scores are distinct: no ties."""

    def forward(self, images):
        self.record()
        pixel = 2 if (self.training or torch.is_grad_enabled()) else 1
        labels, ranks = images[:, 0, 0, 0].long(), images[:, 0, 0, pixel].long()
        classes = torch.arange(10)
        return -((classes[None, :] - labels[:, None] + ranks[:, None]) % 10).float()


def _rank_batches(ranks: list, wrong_ranks: list):
    """Batches for ``_Ranks``: batch i holds one sample per entry of ``ranks[i]``."""
    batches = []
    for right, wrong in zip(ranks, wrong_ranks):
        labels = torch.arange(len(right)) % 10
        images = torch.zeros(len(right), 1, 28, 28)
        images[:, 0, 0, 0], images[:, 0, 0, 1], images[:, 0, 0, 2] = labels, torch.tensor(right), torch.tensor(wrong)
        batches.append((images, labels))
    return batches


def _top_k_expected(ranks: list, k: int) -> float:
    flat = [r for batch in ranks for r in batch]
    return sum(r < k for r in flat) / len(flat)


def _top_k_hint(number: float, ranks: list, k: int) -> str:
    n = sum(map(len, ranks))
    hints = {sum(r < k for b in ranks for r in b): "A count: divide by the number of samples",
             100 * _top_k_expected(ranks, k): "A percentage: return a fraction in [0, 1]",
             sum(sum(r < k for r in b) / len(b) for b in ranks) / len(ranks):
                 "A mean of the batch accuracies: count over every sample",
             _top_k_expected(ranks, 1): "The top-1 accuracy: a sample counts when its label is among the k highest scores",
             _top_k_expected(ranks, k + 1): f"The top-{k + 1} accuracy: take exactly k classes"}
    return next((h for value, h in hints.items() if n and math.isclose(number, value, rel_tol=1e-6)), "")


def check_top_k_accuracy(fn) -> Report:
    """Check ``fn(model, batches, k) -> accuracy``: the fraction of samples whose label is among the
    model's ``k`` highest scores, over every sample, in eval mode without gradients, for k = 3 on
    batches of 8, 8 and 2 samples, then k = 2 on other batches (so a constant answer fails)."""
    report = Report("check_top_k_accuracy")
    ranks = [[0, 2, 5, 1, 9, 3, 0, 7], [4, 6, 8, 2, 3, 5, 9, 1], [0, 0]]
    wrong = [[0] * 8, [0] * 8, [0, 0]]  # in training mode or with gradients on, every label ranks first
    second = [[1, 1, 4, 0, 2], [3, 0, 6, 1, 1, 8, 2]]
    model = _Ranks().train()
    try:
        got = fn(model, iter(_rank_batches(ranks, wrong)), 3)
        got_second = fn(model.train(), iter(_rank_batches(second, [[0] * 5, [0] * 7])), 2)
    except Exception as e:
        return raised(report, "top_k_accuracy", e)
    number, expected = _number(got), _top_k_expected(ranks, 3)
    if number is None:
        report.add("top-3 accuracy", False, f"returned {type(got).__name__}, expected a number in [0, 1]")
    elif math.isclose(number, expected, rel_tol=1e-6):
        report.add("top-3 accuracy", True, f"{number:.4f} ({round(expected * 18)} of 18 samples)")
    else:
        hint = ("This model scores otherwise in training mode or with gradients on (see below)"
                if math.isclose(number, 1.0) else _top_k_hint(number, ranks, 3))
        report.add("top-3 accuracy", False, f"{number:.4g}, expected {expected:.4f}. {hint}".strip())
    if number is not None and math.isclose(number, expected, rel_tol=1e-6):
        other, expected_second = _number(got_second), _top_k_expected(second, 2)
        report.add("top-2 accuracy, other batches", other is not None and math.isclose(other, expected_second, rel_tol=1e-6),
                   f"{other}, expected {expected_second:.4f}: compute it from the batches and the k given")
    return _report_eval_modes(report, model.modes())


# --- Assignment 5: the one-vs-rest (sigmoid) cross-entropy, and a tanh MLP's gradients by layer ---

def sigmoid_cross_entropy(logits, labels):
    """``L = (1/B) sum_i sum_j [softplus(z_ij) - t_ij z_ij]`` with ``t`` the one-hot labels: a
    sigmoid and a binary cross-entropy per class, summed over the classes, averaged over the batch."""
    targets = F.one_hot(labels, logits.shape[1]).to(logits.dtype)
    return F.binary_cross_entropy_with_logits(logits, targets, reduction="sum") / logits.shape[0]


def _bce_cases(seed: int):
    g = torch.Generator().manual_seed(seed)
    batch, classes = (int(v) for v in torch.randint(2, 9, (2,), generator=g))
    big = torch.tensor([[1000.0, -1000.0, 0.0], [-1000.0, 1000.0, 3.0]], dtype=torch.float64)
    return [(f"batch of {batch}, {classes} classes", 3 * torch.randn(batch, classes, generator=g, dtype=torch.float64),
             torch.randint(classes, (batch,), generator=g)),
            ("logits of +-1000", big, torch.tensor([0, 2]))]


def _bce_hint(got, logits, labels, expected) -> str:
    """The usual mistake that gives ``got``, or ``""``."""
    if not isinstance(got, torch.Tensor) or got.shape != expected.shape:
        return ""
    batch, classes = logits.shape
    onehot = F.one_hot(labels, classes).to(logits.dtype)
    variants = {"the sum over the batch: divide by the batch size B": expected * batch,
                "divided by B * C: the loss sums over the classes and averages over the samples only": expected / classes,
                "the sign is flipped: the gradient is (sigmoid(z) - t) / B": -expected,
                "that is the softmax cross-entropy's gradient: this loss applies a sigmoid to each logit":
                    (torch.softmax(logits, 1) - onehot) / batch}
    return next((hint for hint, v in variants.items() if torch.allclose(got.detach().to(v.dtype), v, **TOLERANCE)), "")


def check_sigmoid_cross_entropy_backward(fn, seed: int = 0) -> Report:
    """Check ``fn(logits, labels) -> dL/dlogits`` for ``sigmoid_cross_entropy`` (autograd's gradient
    of it is the reference), on a random batch drawn from ``seed`` and on logits of +-1000."""
    report = Report("check_sigmoid_cross_entropy_backward")
    for case, logits, labels in _bce_cases(seed):
        leaf = logits.clone().requires_grad_()
        expected, = torch.autograd.grad(sigmoid_cross_entropy(leaf, labels), leaf)
        try:
            got = fn(logits.clone(), labels.clone())
        except Exception as e:
            raised(report, f"gradient ({case})", e)
            continue
        if not compare(f"gradient ({case})", got, expected, report):
            hint = _bce_hint(got, logits, labels, expected)
            report.lines[-1].detail += f" ({hint})" if hint else ""
    return report


def check_mlp_layer(fn, layer: int, forward, batch: tuple, loss=sigmoid_cross_entropy) -> Report:
    """Check the gradients of layer ``layer`` (``weight{layer}``, ``bias{layer}``) that
    ``fn(params, cache, grad_logits)`` returns, against autograd through ``forward(params, x) ->
    (logits, cache)`` and ``loss``. ``batch`` is ``(params, x, labels)``.

    ``fn`` gets copies of the parameters, the cache and the exact ``dL/dlogits``; the expected
    gradients come from the grader's snapshot taken before the call, so what ``fn`` does to its
    arguments (an SGD step inside backward, say) cannot move the target.
    """
    params, x, labels = batch
    leaves = {name: p.detach().clone().requires_grad_() for name, p in params.items()}
    logits, _ = forward(leaves, x.clone())
    names = (f"weight{layer}", f"bias{layer}")
    grads = torch.autograd.grad(loss(logits, labels), [logits, *(leaves[n] for n in names)])
    expected = dict(zip(names, grads[1:]))
    with torch.no_grad():
        owned = {name: p.detach().clone() for name, p in params.items()}
        _, cache = forward(owned, x.clone())
    sizes = (params["weight1"].shape[0], *(params[f"bias{k}"].shape[0] for k in (1, 2, 3)))
    report = Report(f"gradients of layer {layer}, layer sizes {sizes}, batch {len(x)}")
    try:
        got = fn(owned, {k: v.clone() for k, v in cache.items()}, grads[0].detach().clone())
    except Exception as e:
        return raised(report, "mlp_backward", e)
    if not isinstance(got, dict):
        report.add("mlp_backward", False, f"returned {type(got).__name__}, expected a dict with keys weight1 ... bias3")
        return report
    for name in names:
        if name not in got:
            report.add(name, False, f"missing: return {name}'s gradient, shape {tuple(expected[name].shape)}")
        else:
            compare(name, got[name], expected[name], report)
    return report


def _report_eval_modes(report: Report, calls: list) -> Report:
    """How an evaluation ran the model: ``calls`` holds ``(training, grad_enabled)`` per call."""
    if not calls:
        report.add("model called", False, "the model never ran: call model(images) for each batch")
        return report
    training, recording = any(t for t, _ in calls), any(g for _, g in calls)
    report.add("eval mode", not training, "model.eval() was called" if not training
               else "the model ran in training mode: call model.eval() first")
    report.add("no gradients", not recording, "ran under torch.no_grad()" if not recording
               else "gradients were recorded: evaluate inside `with torch.no_grad():`")
    return report
