"""``course_lib.checks.modern``: lesson 9's checks pass the solutions and name each mistake."""

import torch
import torch.nn.functional as F
from torch.func import vmap

from course_lib.checks import check_ensemble, check_modern_function, exercise
from course_lib.functions import Linear_Layer


def softplus_function(style="today", derivative=torch.sigmoid, vmap_rule=True):
    """A softplus Function with one chosen flaw."""

    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return grad_output * derivative(x)

    if style == "old":
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return F.softplus(x)

        body = {"forward": staticmethod(forward)}
    else:
        def forward(x):
            return F.softplus(x)

        def setup_context(ctx, inputs, output):
            ctx.save_for_backward(inputs[0])

        body = {"forward": staticmethod(forward), "setup_context": staticmethod(setup_context),
                "generate_vmap_rule": vmap_rule}
    return type("Softplus", (torch.autograd.Function,), {**body, "backward": staticmethod(backward)})


def test_solution_passes():
    report = check_modern_function(softplus_function())
    assert report.passed, report
    assert len(report.lines) == 6


def test_old_style_fails_on_style_and_vmap():
    report = check_modern_function(softplus_function("old"))
    assert report.failed_names() == ["today's style", "vmap"]
    assert "move the ctx work into setup_context" in str(report)


def test_missing_vmap_rule_is_named():
    report = check_modern_function(softplus_function(vmap_rule=False))
    assert report.failed_names() == ["vmap"]
    assert "generate_vmap_rule = True" in str(report)


def test_wrong_derivative_fails_gradient_and_per_sample_grad():
    report = check_modern_function(softplus_function(derivative=lambda x: torch.sigmoid(-x)))
    assert report.failed_names() == ["gradient", "per-sample grad"]


def test_not_a_function_class():
    report = check_modern_function(F.softplus)
    assert not report.passed and "expected a torch.autograd.Function class" in str(report)


def test_stub_is_not_attempted_and_never_passes():
    class Stub(torch.autograd.Function):
        @staticmethod
        def forward(x):
            raise NotImplementedError

        @staticmethod
        def setup_context(ctx, inputs, output):
            raise NotImplementedError

        @staticmethod
        def backward(ctx, grad_output):
            raise NotImplementedError

    assert not check_modern_function(Stub).passed
    report = exercise(check_modern_function, Stub, solution=softplus_function())
    assert "Stub still raises NotImplementedError" in str(report)


def test_ensemble():
    assert check_ensemble(ensemble_answer).passed
    no_bias = check_ensemble(lambda x, w, b: torch.stack([x @ wk for wk in w]))
    assert not no_bias.passed and "x @ weights[k] + biases[k]" in str(no_bias)
    summed = check_ensemble(lambda x, w, b: (torch.einsum("bi,kio->kbo", x, w) + b[:, None]).sum(0))
    assert not summed.passed and "shape (4, 2), expected (3, 4, 2)" in str(summed)


def ensemble_answer(x, weights, biases):
    """Lesson 9's exercise 2, answered: vmap over the models' parameters, not over the samples."""
    return vmap(Linear_Layer.apply, in_dims=(None, 0, 0))(x, weights, biases)
