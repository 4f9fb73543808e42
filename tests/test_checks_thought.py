"""The checks of the exercises that need thought: right answers pass, each typical mistake fails
on the line that names it, and a stub reports NOT ATTEMPTED."""

import pytest
import torch
from torch import nn

from course_lib.checks import (
    check_in_place_function,
    check_init_std,
    check_module_list,
    check_registered_parameters,
    check_rms_norm_backward,
    check_shared_layer_grads,
    exercise,
)
from course_lib.layers import Linear


class InPlaceReLU(torch.autograd.Function):
    @staticmethod
    def forward(x):
        return x.clamp_(min=0)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.mark_dirty(inputs[0])
        ctx.save_for_backward(output)

    @staticmethod
    def backward(ctx, grad_output):
        (y,) = ctx.saved_tensors
        return grad_output * (y > 0)


class OutOfPlaceReLU(InPlaceReLU):
    @staticmethod
    def forward(x):
        return x.clamp(min=0)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(output)


class WrongSlope(InPlaceReLU):
    @staticmethod
    def backward(ctx, grad_output):
        return grad_output.clone()


class Stub(InPlaceReLU):
    @staticmethod
    def forward(x):
        raise NotImplementedError("modify x in place")


def test_in_place_relu_passes():
    assert check_in_place_function(InPlaceReLU)


def test_out_of_place_fails_only_where_the_input_is_read_again():
    report = check_in_place_function(OutOfPlaceReLU)
    assert report.failed_names() == ["in place", "gradient through the input's name"]


def test_a_wrong_backward_fails_the_gradient_lines():
    report = check_in_place_function(WrongSlope)
    assert report.failed_names() == ["gradient through the output", "gradient through the input's name"]


def test_a_stub_is_not_attempted():
    assert "NOT ATTEMPTED" in str(exercise(check_in_place_function, Stub, solution=InPlaceReLU))
    assert "NOT ATTEMPTED" in str(exercise(check_shared_layer_grads, lambda x, W, b, G: (_ for _ in ()).throw(
        NotImplementedError())))


def shared_grads(x, W, b, G):
    H = x @ W + b
    G_H = G @ W.T
    return H.T @ G + x.T @ G_H, G.sum(0) + G_H.sum(0)


def test_shared_layer_right_answer_passes():
    assert check_shared_layer_grads(shared_grads)


def test_shared_layer_one_use_only_is_named():
    def second_only(x, W, b, G):
        return (x @ W + b).T @ G, G.sum(0)

    report = check_shared_layer_grads(second_only)
    assert report.failed_names() == ["dW", "db"]
    assert "the second use's share alone" in str(report)


def test_shared_layer_wrong_shape_fails():
    report = check_shared_layer_grads(lambda x, W, b, G: (x.T @ G[:, :3], shared_grads(x, W, b, G)[1]))
    assert report.failed_names() == ["dW"] and "shape (4, 3), expected (4, 4)" in str(report)


class GainLinear(nn.Module):
    def __init__(self, n_in, n_out):
        super().__init__()
        self.linear = Linear(n_in, n_out)
        self.gain = nn.Parameter(torch.ones(n_out))

    def forward(self, x):
        return self.linear(x) * self.gain


class UnregisteredGain(GainLinear):
    def __init__(self, n_in, n_out):
        super().__init__(n_in, n_out)
        del self.gain
        self.gain = torch.ones(n_out, requires_grad=True)


def test_registered_gain_passes():
    assert check_registered_parameters(GainLinear)


def test_unregistered_gain_fails_parameters_and_state_dict():
    report = check_registered_parameters(UnregisteredGain)
    assert report.failed_names() == ["parameters", "state_dict"]
    assert "where is the gain?" in str(report)


def rms_norm_backward(x, g, G, eps=1e-6):
    n = x.shape[-1]
    r = (x.pow(2).mean(-1, keepdim=True) + eps).sqrt()
    dg = (G * x / r).sum(0)
    Gg = G * g
    return Gg / r - x * (Gg * x).sum(-1, keepdim=True) / (n * r**3), dg


def test_rms_norm_backward_right_answer_passes():
    assert check_rms_norm_backward(rms_norm_backward)


def test_rms_norm_backward_with_r_held_constant_is_named():
    def constant_r(x, g, G):
        r = (x.pow(2).mean(-1, keepdim=True) + 1e-6).sqrt()
        return G * g / r, rms_norm_backward(x, g, G)[1]

    report = check_rms_norm_backward(constant_r)
    assert report.failed_names() == ["dx"] and "treats r as a constant" in str(report)


def test_rms_norm_backward_without_the_batch_sum_fails_dg():
    report = check_rms_norm_backward(lambda x, g, G: (rms_norm_backward(x, g, G)[0], G * x))
    assert report.failed_names() == ["dg"]


# Lesson 6, exercise 1: the initial scale for Linear + LeakyReLU(a).
def right_std(n_in, a):
    return (2 / ((1 + a * a) * n_in)) ** 0.5


def test_init_std_right_answer_passes_and_keeps_20_layers_steady():
    report = check_init_std(right_std)
    assert report.passed, report
    assert "RMS after layer 20" in str(report)


@pytest.mark.parametrize("wrong, named", [
    (lambda n, a: 2 / ((1 + a * a) * n), "that is the variance"),
    (lambda n, a: (1 / n) ** 0.5, "the activation then keeps only part of it"),
    (lambda n, a: (2 / n) ** 0.5, "that is ReLU's answer"),
    (lambda n, a: (2 / ((1 + a) * n)) ** 0.5, "what fraction of it does the activation keep"),
])
def test_init_std_typical_mistakes_are_named(wrong, named):
    report = check_init_std(wrong)
    assert not report.passed
    assert named in str(report)


def test_init_std_returned_as_a_tensor_is_accepted():
    assert check_init_std(lambda n, a: torch.tensor(right_std(n, a))).passed


# Lesson 6, exercise 2: layers kept in a Python list are invisible to the module.
class RightStack(nn.Module):
    def __init__(self, sizes):
        super().__init__()
        self.layers = nn.ModuleList(Linear(a, b) for a, b in zip(sizes, sizes[1:]))

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x)
            x = x.relu() if i < len(self.layers) - 1 else x
        return x


class ListStack(RightStack):
    def __init__(self, sizes):
        nn.Module.__init__(self)
        self.hidden = [Linear(a, b) for a, b in zip(sizes[:-2], sizes[1:-1])]  # a plain list
        self.out = Linear(sizes[-2], sizes[-1])

    def forward(self, x):
        for layer in self.hidden:
            x = layer(x).relu()
        return self.out(x)


class TrailingReLU(RightStack):
    def forward(self, x):
        return super().forward(x).relu()


def test_module_list_right_answer_passes():
    assert check_module_list(RightStack).passed
    assert check_module_list(lambda sizes: nn.Sequential(
        Linear(6, 5), nn.ReLU(), Linear(5, 4), nn.ReLU(), Linear(4, 3))).passed


def test_layers_in_a_plain_list_fail_parameters_state_dict_and_double():
    report = check_module_list(ListStack)
    failed = report.failed_names()
    assert {"parameters", "state_dict", ".double()"} <= set(failed), report
    assert "holds 15 numbers" in str(report) and "have 74" in str(report)


def test_a_relu_after_the_last_layer_fails_forward_only():
    report = check_module_list(TrailingReLU)
    assert report.failed_names() == ["forward"], report
