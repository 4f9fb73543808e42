"""The checks the graded assignments add to ``course_lib.checks``: right code passes, wrong code is
named, and fresh seeds mean fresh shapes (so hard-coded answers fail)."""

import pytest
import torch

from course_lib import Linear_Layer
from course_lib.checks import _random_linear_cases, check_gradients, check_linear_random


def linear_function(grad_weight_fn):
    """A Linear Function whose weight gradient is ``grad_weight_fn(input, grad_output)``."""

    class Student(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, w, b=None):
            ctx.save_for_backward(x, w)
            ctx.has_bias = b is not None
            return x @ w + b if b is not None else x @ w

        @staticmethod
        def backward(ctx, g):
            x, w = ctx.saved_tensors
            return g @ w.t(), grad_weight_fn(x, g), g.sum(0) if ctx.has_bias else None

    return Student


def test_random_linear_passes_a_correct_function():
    report = check_linear_random(Linear_Layer, seed=7)
    assert report.passed
    assert len(report.lines) == 6  # output and gradients, three cases
    assert sum("no bias" in line.name for line in report.lines) == 2


def test_random_linear_names_wrong_gradient_values():
    report = check_linear_random(linear_function(lambda x, g: 0.5 * x.t() @ g), seed=7)
    failed = report.failed_names()
    assert failed and all(name.startswith("gradients") for name in failed)
    assert "finite differences disagree with backward" in str(report)
    assert all(line.passed for line in report.lines if line.name.startswith("output"))


def test_random_linear_reports_a_transposed_gradient_shape():
    # with a square weight the shape is right and only the values are wrong: skip those cases
    report = check_linear_random(linear_function(lambda x, g: (x.t() @ g).t()), seed=3)
    text = str(report)
    assert not report.passed
    assert "invalid gradient" in text and "expected shape compatible with" in text


def test_random_linear_reports_forward_errors_without_crashing():
    class Broken(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, w, b=None):
            raise NotImplementedError()

        @staticmethod
        def backward(ctx, g):
            raise NotImplementedError()

    report = check_linear_random(Broken, seed=1)
    assert len(report.lines) == 3 and not any(line.passed for line in report.lines)
    assert all("raised NotImplementedError" in line.detail for line in report.lines)


def test_random_linear_shapes_follow_the_seed():
    shapes = lambda seed: [(x.shape, w.shape, b is None) for _, x, w, b in _random_linear_cases(seed, 3)]
    assert shapes(5) == shapes(5)
    assert len({tuple(shapes(seed)) for seed in range(6)}) > 1
    cases = _random_linear_cases(5, 4)
    assert cases[0][1].shape[0] == 1  # always a batch of one
    assert [b is None for *_, b in cases] == [False, True, False, True]
    assert all(x.dtype == torch.float64 for _, x, _, _ in cases)


def test_random_linear_needs_a_function_class():
    with pytest.raises(TypeError, match="expected a torch.autograd.Function class"):
        check_linear_random(lambda x, w, b: x @ w)


def reference(sizes=(3, 3, 3, 3)):
    return {f"{kind}{i}": torch.randn(sizes[i - 1] if kind == "weight" else sizes[i],
                                      *((sizes[i],) if kind == "weight" else ()), dtype=torch.float64)
            for i in (1, 2, 3) for kind in ("weight", "bias")}


def test_gradients_pass_when_equal():
    expected = reference((2, 3, 5, 1))
    report = check_gradients({k: v.clone() for k, v in expected.items()}, expected)
    assert report.passed and len(report.lines) == 6
    assert [line.name for line in report.lines] == list(expected)


def test_gradients_name_a_gradient_given_to_the_wrong_layer():
    expected = reference()
    got = dict(expected, weight2=expected["weight3"], weight3=expected["weight2"])  # swapped
    report = check_gradients(got, expected)
    assert report.failed_names() == ["weight2", "weight3"]
    text = str(report)
    assert "It equals the gradient of weight3" in text and "It equals the gradient of weight2" in text


def test_gradients_report_shape_missing_extra_and_wrong_type():
    expected = reference((2, 3, 5, 1))
    got = {k: v for k, v in expected.items() if k != "bias1"}
    got["weight2"] = expected["weight2"].t()
    got["w1"] = expected["weight1"]
    report = check_gradients(got, expected)
    assert set(report.failed_names()) == {"bias1", "weight2", "w1"}
    text = str(report)
    assert "FAIL  bias1    missing: return a gradient for every parameter" in text
    assert "shape (5, 3), expected (3, 5) (transposed?)" in text
    assert "unexpected key" in text
    assert not check_gradients([1, 2], expected).passed
    assert "expected a dict with keys weight1, bias1" in str(check_gradients([1, 2], expected))
