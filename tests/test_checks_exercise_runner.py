"""Tests of course_lib/checks/exercise_runner.py: ``exercise`` and its NOT ATTEMPTED report."""

import torch

from course_lib import Linear_Layer
from course_lib.checks import check_backward, check_function, check_linear_forward, exercise
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
