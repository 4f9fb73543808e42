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

    assert check_sgd_update(right).passed

    def rebinds(params, lr):
        for p in params:
            p = p - lr * p.grad  # noqa: PLW2901 (the mistake under test)

    text = str(check_sgd_update(rebinds))
    assert "never stepped" not in text and "rebinds the name p" in text

    def nothing(params, lr):
        pass

    assert "never stepped" in str(check_sgd_update(nothing))

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
