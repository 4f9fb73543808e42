"""Tests of course_lib/checks/linear.py: a right Linear layer passes, each kind of wrong one is
named, including what autograd hides (raw gradients through a FakeCtx, inputs needing no gradient)."""

import pytest
import torch

from course_lib import Linear_Layer
from course_lib.checks import check_linear_backward, check_linear_forward, check_linear_needs_grad


def good_backward(grad_output, x, w, b):
    return grad_output @ w.t(), x.t() @ grad_output, None if b is None else grad_output.sum(0)


def test_correct_function_class_passes():
    report = check_linear_backward(Linear_Layer)
    assert report.passed and bool(report)
    assert len(report.lines) == 9  # three gradients x three cases
    assert "all correct" in str(report)
    report.raise_if_failed()  # no exception


def test_correct_plain_backward_passes():
    assert check_linear_backward(good_backward).passed


def test_wrong_weight_layout_is_named_with_shapes():
    def transposed(grad_output, x, w, b):
        gi, gw, gb = good_backward(grad_output, x, w, b)
        return gi, gw.t(), gb  # the source lesson's (out, in) habit

    report = check_linear_backward(transposed)
    assert not report.passed
    failed = report.failed_names()
    assert failed and all(name.startswith("grad_weight") for name in failed)
    text = str(report)
    assert "FAIL  grad_weight (batch of 4)" in text
    assert "shape (3, 5), expected (5, 3) (transposed?)" in text
    assert "PASS  grad_input (batch of 4)" in text


def test_wrong_values_report_largest_error():
    def half_bias(grad_output, x, w, b):
        gi, gw, gb = good_backward(grad_output, x, w, b)
        return gi, gw, None if gb is None else gb / 2

    report = check_linear_backward(half_bias)
    assert set(report.failed_names()) == {"grad_bias (batch of 4)", "grad_bias (batch of 1)"}
    assert "largest error" in str(report) and "at index" in str(report)
    with pytest.raises(AssertionError, match="grad_bias"):
        report.raise_if_failed()


def test_missing_gradient_and_crash_are_reported():
    def no_input_grad(grad_output, x, w, b):
        _, gw, gb = good_backward(grad_output, x, w, b)
        return None, gw, gb

    report = check_linear_backward(no_input_grad)
    assert all(n.startswith("grad_input") for n in report.failed_names())
    assert "returned None, expected a tensor of shape (4, 5)" in str(report)

    def crashes(grad_output, x, w, b):
        raise NotImplementedError

    report = check_linear_backward(crashes)
    assert not report.passed and "raised NotImplementedError" in str(report)


def test_bias_must_be_none_without_bias():
    def always_bias(grad_output, x, w, b):
        return grad_output @ w.t(), x.t() @ grad_output, grad_output.sum(0)

    report = check_linear_backward(always_bias)
    assert report.failed_names() == ["grad_bias (no bias)"]


def test_forward_check():
    assert check_linear_forward(Linear_Layer).passed
    report = check_linear_forward(lambda x, w, b: x @ w)  # forgot the bias
    assert report.failed_names() == ["output (batch of 4)", "output (batch of 1)"]
    report = check_linear_forward(lambda x, w, b: x @ w + b)  # crashes without bias
    assert report.failed_names() == ["output (no bias)"]
    assert "raised TypeError" in str(report)


# --- what autograd hides: raw gradients through a FakeCtx, inputs needing no gradient ---


def linear_class(backward_body):
    """A Linear Function saving (input, weight, bias) whose backward is ``backward_body(ctx, g)``."""

    class Student(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, w, b=None):
            ctx.save_for_backward(x, w, b)
            return x @ w if b is None else x @ w + b

        backward = staticmethod(backward_body)

    return Student


def test_missing_batch_sum_is_seen_although_autograd_would_sum_it():
    def no_sum(ctx, g):
        x, w, b = ctx.saved_tensors
        return g @ w.t(), x.t() @ g, None if b is None else g  # grad_bias shaped (B, out)

    Student = linear_class(no_sum)
    x, w, b = (torch.randn(*s, dtype=torch.float64, requires_grad=True) for s in ((4, 5), (5, 3), (3,)))
    Student.apply(x, w, b).sum().backward()  # autograd accepts it and sums to (3,) behind our back
    assert b.grad.shape == (3,)
    report = check_linear_backward(Student)
    assert report.failed_names() == ["grad_bias (batch of 4)", "grad_bias (batch of 1)"]
    assert "shape (4, 3), expected (3,) (not summed over the batch?)" in str(report)


def test_two_argument_apply_and_needs_input_grad_index_2():
    def idiomatic(ctx, g):
        x, w, _ = ctx.saved_tensors
        return g @ w.t(), x.t() @ g, g.sum(0) if ctx.needs_input_grad[2] else None

    report = check_linear_backward(linear_class(idiomatic))
    assert report.failed_names() == ["backward (no bias)"]
    assert ("raised IndexError: tuple index out of range (ctx.needs_input_grad has one flag per argument "
            "given to apply: apply(x, w) gives two)") in str(report)
    assert check_linear_forward(linear_class(idiomatic)).passed


def test_swapped_needs_input_grad_is_caught_when_an_input_needs_no_gradient():
    def swapped(ctx, g):
        x, w, b = ctx.saved_tensors
        return (g @ w.t() if ctx.needs_input_grad[1] else None, x.t() @ g if ctx.needs_input_grad[0] else None,
                None if b is None else g.sum(0))

    assert check_linear_backward(linear_class(swapped)).passed  # every input needs a gradient there
    report = check_linear_needs_grad(linear_class(swapped))
    assert report.failed_names() == ["grad_weight (input needs no gradient)", "grad_input (weight needs no gradient)"]
    assert "ctx.needs_input_grad[1] is True: this gradient is needed (needs_input_grad indices swapped?)" in str(report)
    assert check_linear_needs_grad(Linear_Layer).passed


def test_nothing_saved_and_too_many_gradients_are_named():
    class NoSave(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, w, b=None):
            return x @ w if b is None else x @ w + b

        @staticmethod
        def backward(ctx, g):
            x, w, b = ctx.saved_tensors
            return g @ w.t(), x.t() @ g, g.sum(0)

    text = str(check_linear_backward(NoSave))
    assert "did forward call ctx.save_for_backward(...)?" in text

    def four(ctx, g):
        x, w, b = ctx.saved_tensors
        return g @ w.t(), x.t() @ g, None if b is None else g.sum(0), g
    report = check_linear_backward(linear_class(four))
    assert len(report.failed_names()) == 3 and "backward returned 4 gradients for 3 inputs" in str(report)
