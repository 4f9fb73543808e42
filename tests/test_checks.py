"""``course_lib.checks``: right implementations pass, each kind of wrong one is named."""

import pytest
import torch

from course_lib import Linear_Layer
from course_lib.checks import (
    check_accuracy, check_function, check_linear_backward, check_linear_forward, check_sgd_step,
)
from course_lib.functions import Sigmoid, Square, Tanh


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


def test_function_check():
    assert check_function(Tanh, torch.tanh).passed
    assert check_function(Square, torch.square).passed

    class WrongSigmoid(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            y = torch.sigmoid(x)
            ctx.save_for_backward(y)
            return y

        @staticmethod
        def backward(ctx, grad_output):
            (y,) = ctx.saved_tensors
            return grad_output * y  # forgot (1 - y)

    report = check_function(WrongSigmoid, torch.sigmoid)
    assert report.failed_names() == ["gradient of input 0", "gradcheck"]
    assert check_function(Sigmoid, torch.sigmoid).passed


def test_sgd_step_check_catches_the_source_lessons_bug():
    torch.manual_seed(0)
    params = {n: torch.randn(3) for n in ("weight1", "weight2", "weight3")}
    grads = {n: torch.randn(3) for n in params}
    lr = 0.1
    after = {
        "weight1": params["weight1"] - lr * grads["weight1"],
        "weight2": params["weight2"] - 2 * lr * grads["weight2"],  # stepped twice
        "weight3": params["weight3"].clone(),  # never stepped
    }
    report = check_sgd_step(params, after, grads, lr)
    text = str(report)
    assert report.failed_names() == ["weight2", "weight3"]
    assert "stepped twice" in text and "never stepped" in text


def test_accuracy_check():
    assert check_accuracy(0.95, 0.9).passed
    report = check_accuracy(0.85, 0.9)
    assert not report.passed and "85.00%, needed at least 90.00%" in str(report)
