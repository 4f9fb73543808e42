"""Tests of course_lib/checks/function.py: a Function against a reference op and against finite
differences; a wrong derivative is named by input."""

import torch

from course_lib.checks import check_function, check_gradcheck
from course_lib.functions import Sigmoid, Square, Tanh


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


def test_gradcheck_names_the_input_and_the_error_without_a_jacobian():
    class WrongSlope(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, a):
            ctx.save_for_backward(x, a)
            return a * x

        @staticmethod
        def backward(ctx, g):
            x, a = ctx.saved_tensors
            return g * a, 2 * (g * x).sum_to_size(a.shape)  # slope gradient doubled

    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    a = torch.randn(4, dtype=torch.float64, requires_grad=True)
    report = check_gradcheck(WrongSlope, (x, a), names=("x", "slope"))
    assert report.failed_names() == ["slope"]
    assert "backward disagrees with finite differences of forward by" in str(report)
    assert "PASS  x      backward agrees with finite differences" in str(report)
    frozen = check_gradcheck(WrongSlope, (x, a.detach()), names=("x", "slope"))
    assert frozen.passed and [line.name for line in frozen.lines] == ["x"]  # slope needs no gradient
    assert check_gradcheck(Tanh, (x,)).passed
