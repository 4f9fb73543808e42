"""Tests of course_lib/checks/lessons.py: the lesson exercises' checks and their feedback."""

import torch
import torch.nn.functional as F

from course_lib import Linear_Layer
from course_lib.checks import check_backward, check_function, check_linear_forward, check_sgd_update
from course_lib.checks.lessons import exercise
from course_lib.functions import Square


def stub(*args):
    raise NotImplementedError


class StubFunction(torch.autograd.Function):
    @staticmethod
    def forward(x):
        raise NotImplementedError

    @staticmethod
    def setup_context(ctx, inputs, output):
        raise NotImplementedError

    @staticmethod
    def backward(ctx, grad_output):
        raise NotImplementedError


class OldStyleStub(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        raise NotImplementedError

    @staticmethod
    def backward(ctx, grad_output):
        raise NotImplementedError


class HalfWrittenSquare(torch.autograd.Function):
    """Forward written (modern style), backward still the stub."""

    @staticmethod
    def forward(x):
        return x * x

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx, grad_output):
        raise NotImplementedError


def test_an_untouched_stub_reports_not_attempted_and_never_the_solution():
    for check, answer, solution, kwargs in [
        (check_linear_forward, stub, Linear_Layer, {}),
        (check_function, StubFunction, Square, {"reference": torch.square}),
        (check_function, OldStyleStub, Square, {"reference": torch.square}),
        (check_backward, stub, lambda g, x: g * (x > 0), {"forward": torch.relu}),
    ]:
        report = exercise(check, answer, solution=solution, **kwargs)
        text = str(report)
        assert not report.passed
        assert text.startswith(f"{check.__name__}: NOT ATTEMPTED"), text
        assert "PASS" not in text and "all correct" not in text
        assert f"{answer.__name__} still raises NotImplementedError" in text


def test_a_written_answer_gets_its_own_report():
    wrong = exercise(check_linear_forward, lambda x, w, b: x @ w, solution=Linear_Layer)
    assert not wrong.passed and "NOT ATTEMPTED" not in str(wrong)
    assert wrong.failed_names() == ["output (batch of 4)", "output (batch of 1)"]
    right = exercise(check_linear_forward, lambda x, w, b: x @ w if b is None else x @ w + b)
    assert right.passed
    partial = exercise(check_function, HalfWrittenSquare, solution=Square, reference=torch.square)
    assert not partial.passed and "NOT ATTEMPTED" not in str(partial)
    assert "raised NotImplementedError" in str(partial)
    assert partial.lines[0].name == "forward" and partial.lines[0].passed


def test_a_lesson_whose_own_solution_fails_is_an_error():
    try:
        exercise(check_linear_forward, stub, solution=lambda x, w, b: x @ w)
    except AssertionError as error:
        assert "output (batch of 4)" in str(error)
    else:
        raise AssertionError("a failing solution must raise")


def mse_grad(g, p, t):
    return g * 2 * (p - t) / p.numel()


SHAPES = ((6, 1), (6, 1))


def test_mse_backward_mistakes_are_named():
    assert check_backward(mse_grad, F.mse_loss, shapes=SHAPES).passed
    cases = {
        "a factor 2 is missing": lambda g, p, t: g * (p - t) / p.numel(),
        "the 1/N of the mean is missing": lambda g, p, t: g * 2 * (p - t),
        "the sign is flipped": lambda g, p, t: g * 2 * (t - p) / p.numel(),
    }
    for words, fn in cases.items():
        report = check_backward(fn, F.mse_loss, shapes=SHAPES)
        assert not report.passed and words in str(report), (words, str(report))
    noisy = check_backward(lambda g, p, t: mse_grad(g, p, t) + 0.1 * p, F.mse_loss, shapes=SHAPES)
    assert "largest error" in str(noisy) and "factor" not in str(noisy)


def test_a_float32_gradient_is_named_as_a_dtype_not_a_wrong_derivative():
    report = check_backward(lambda g, p, t: mse_grad(g, p, t).float(), F.mse_loss, shapes=SHAPES)
    assert report.failed_names() == ["gradient of input 0 dtype"]
    text = str(report)
    assert "torch.float32, expected torch.float64" in text and "right to float32 precision" in text
    both = check_backward(lambda g, p, t: (g * (p - t) / p.numel()).float(), F.mse_loss, shapes=SHAPES)
    assert both.failed_names() == ["gradient of input 0 dtype", "gradient of input 0"]
    assert "a factor 2 is missing" in str(both)


def test_sgd_update_names_each_mistake():
    def right(params, lr):
        with torch.no_grad():
            for p in params:
                p -= lr * p.grad
                p.grad = None

    report = check_sgd_update(right)
    assert report.passed and len(report.lines) == 12

    def rebinds(params, lr):
        for p in params:
            p = p - lr * p.grad  # noqa: PLW2901 (the mistake under test)

    report = check_sgd_update(rebinds)
    text = str(report)
    assert "never stepped" not in text and "rebinds the name p" in text
    assert "weight1" in report.failed_names() and "weight1.grad" in report.failed_names()

    def nothing(params, lr):
        pass

    assert "never stepped" in str(check_sgd_update(nothing))

    def forgot_no_grad(params, lr):
        for p in params:
            p -= lr * p.grad

    assert "raised RuntimeError" in str(check_sgd_update(forgot_no_grad))

    def wrong_sign(params, lr):
        with torch.no_grad():
            for p in params:
                p += lr * p.grad
                p.grad = None

    report = check_sgd_update(wrong_sign)
    assert len(report.failed_names()) == 6 and "moved along the gradient" in str(report)

    def twice_and_never(params, lr):  # the source lesson's slip
        with torch.no_grad():
            for i, p in enumerate(params):
                p -= lr * p.grad * (0 if i >= 4 else 2 if i >= 2 else 1)
                p.grad.zero_()

    report = check_sgd_update(twice_and_never)
    assert report.failed_names() == ["weight2", "bias2", "weight3", "bias3"]
    assert "stepped twice" in str(report) and "never stepped" in str(report)


# -- the checks of the exercises that need a derivation --------------------------------------------

import itertools  # noqa: E402

from course_lib.checks import (  # noqa: E402
    check_design, check_fold_scale_shift, check_interaction, check_relu_mlp_gradients,
    check_rms_norm, check_torch_layout_backward,
)


def test_fold_scale_shift():
    assert check_fold_scale_shift(lambda w, b, s, t: (w * s, b * s + t)).passed
    report = check_fold_scale_shift(lambda w, b, s, t: (w * s, b + t))  # forgot to scale b
    assert report.failed_names() == ["bias"] and "old bias" in str(report)
    report = check_fold_scale_shift(lambda w, b, s, t: (s * w, t + s * b))
    assert report.passed  # any way of writing the same numbers passes
    assert "raised" in str(check_fold_scale_shift(lambda w, b, s, t: w * s))


def torch_layout_backward(g, x, w, b):
    rows_g, rows_x = g.reshape(-1, g.shape[-1]), x.reshape(-1, x.shape[-1])
    return g @ w, rows_g.t() @ rows_x, None if b is None else rows_g.sum(0)


def test_torch_layout_backward():
    assert check_torch_layout_backward(torch_layout_backward).passed
    report = check_torch_layout_backward(lambda g, x, w, b: (g @ w, g.t() @ x, g.sum(0)))
    assert "raised RuntimeError" in str(report)  # 2-D only: the 3-D input fails
    assert "expected None when there is no bias" in str(report)
    transposed = check_torch_layout_backward(
        lambda g, x, w, b: (*torch_layout_backward(g, x, w, b)[:1],
                            torch_layout_backward(g, x, w, b)[1].t(),
                            torch_layout_backward(g, x, w, b)[2]))
    assert "grad_weight (batch)" in transposed.failed_names() and "(transposed?)" in str(transposed)


def relu_mlp(x, t, w1, b1, w2, b2):
    z = x @ w1 + b1
    h = z.clamp(min=0)
    g = 2 * (h @ w2 + b2 - t) / t.numel()
    gz = (g @ w2.t()) * (z > 0)
    return x.t() @ gz, gz.sum(0), h.t() @ g, g.sum(0)


def test_relu_mlp_gradients():
    assert check_relu_mlp_gradients(relu_mlp).passed

    def no_mask(x, t, w1, b1, w2, b2):  # forgot the ReLU's mask on the way back
        z = x @ w1 + b1
        g = 2 * (z.clamp(min=0) @ w2 + b2 - t) / t.numel()
        gz = g @ w2.t()
        return x.t() @ gz, gz.sum(0), *relu_mlp(x, t, w1, b1, w2, b2)[2:]

    report = check_relu_mlp_gradients(no_mask)
    assert report.failed_names() == ["dL/dw1", "dL/db1"] and "through the ReLU" in str(report)

    def with_autograd(x, t, w1, b1, w2, b2):
        w1.requires_grad_()
        loss = F.mse_loss(torch.relu(x @ w1 + b1) @ w2 + b2, t)
        return torch.autograd.grad(loss, w1)

    assert "raised RuntimeError" in str(check_relu_mlp_gradients(with_autograd))


def interaction(runs, a, b, metric):
    codes = [runs[n].map(dict(zip(sorted(runs[n].unique()), (-1, 1)))) for n in (a, b)]
    agree = codes[0] * codes[1] > 0
    return runs.loc[agree, metric].mean() - runs.loc[~agree, metric].mean()


def test_interaction():
    assert check_interaction(interaction).passed
    half = check_interaction(lambda *args: interaction(*args) / 2)
    assert "That is half of it" in str(half)
    flipped = check_interaction(lambda *args: -interaction(*args))
    assert "The sign is flipped" in str(flipped)
    assert "raised" in str(check_interaction(lambda runs, a, b, metric: runs[a] * runs[b]))


def design(grid, generators):
    """16 runs: the first four hyperparameters' full grid, the last two as products of codes."""
    names = list(grid)
    points = []
    for codes in itertools.product((-1, 1), repeat=4):
        extra = tuple(int(torch.tensor([codes[i] for i in g]).prod()) for g in generators)
        points.append({n: grid[n][(c + 1) // 2] for n, c in zip(names, codes + extra)})
    return points


def test_design():
    assert check_design(lambda grid: design(grid, [(0, 1, 2), (1, 2, 3)])).passed
    aliased = check_design(lambda grid: design(grid, [(0, 1), (2, 3)]))  # resolution III
    assert aliased.failed_names() == ["main effects clear"]
    assert "lr is confounded with num_units x shift" in str(aliased)
    full = check_design(lambda grid: [dict(zip(grid, v)) for v in itertools.product(*grid.values())])
    assert full.failed_names() == ["size"] and "at most 16" in str(full)
    bad_value = check_design(lambda grid: [dict(design(grid, [(0, 1, 2), (1, 2, 3)])[0], lr=0.5)])
    assert bad_value.failed_names() == ["settings"]


class RMSNorm(torch.nn.Module):
    def __init__(self, features):
        super().__init__()
        self.gain = torch.nn.Parameter(torch.ones(features))

    def forward(self, x):
        return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * self.gain


def test_rms_norm():
    assert check_rms_norm(RMSNorm).passed

    class PlainTensor(RMSNorm):
        def __init__(self, features):
            torch.nn.Module.__init__(self)
            self.gain = torch.ones(features)  # not registered

    assert "register one nn.Parameter" in str(check_rms_norm(PlainTensor))

    class WholeTensorMean(RMSNorm):
        def forward(self, x):
            return x / torch.sqrt(x.pow(2).mean() + 1e-6) * self.gain

    report = check_rms_norm(WholeTensorMean)
    assert report.failed_names() == ["output (3-D input)"] and "last dimension" in str(report)

    class Detached(RMSNorm):
        def forward(self, x):
            return super().forward(x).detach() * 1

    assert check_rms_norm(Detached).failed_names() == ["gradient reaches gain"]
