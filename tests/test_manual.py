"""``ManualLinear``: a hand-called backward that must agree with autograd."""

import pytest
import torch

from course_lib import Linear_Layer, ManualLinear
from course_lib.functions import Sigmoid


def three_layer_params(bias=True, dtype=torch.float64):
    sizes = [(2, 3), (3, 5), (5, 1)]
    weights = [torch.randn(i, o, dtype=dtype, requires_grad=True) for i, o in sizes]
    biases = [torch.randn(o, dtype=dtype, requires_grad=True) if bias else None for _, o in sizes]
    return weights, biases


@pytest.mark.parametrize("bias", [True, False])
def test_three_layer_network_matches_autograd(bias):
    x = torch.randn(4, 2, dtype=torch.float64)
    target = torch.randn(4, 1, dtype=torch.float64)
    weights, biases = three_layer_params(bias)

    # manual: forward layer by layer, then backward from the loss to the first layer
    layers = [ManualLinear() for _ in weights]
    h = x
    for layer, w, b in zip(layers, weights, biases):
        h = layer.forward(h, w, b)
    assert h.grad_fn is None  # no graph was recorded
    grad = 2 * (h - target) / h.numel()  # d mean((h - t)^2) / dh
    manual = []
    for layer in reversed(layers):
        grad_input, grad_w, grad_b = layer.backward(grad)
        manual.append((grad_w, grad_b))
        grad = grad_input
    manual.reverse()
    assert grad is None  # the data needs no gradient

    # autograd on the same parameters
    h = x
    for w, b in zip(weights, biases):
        h = Linear_Layer.apply(h, w, b)
    torch.nn.functional.mse_loss(h, target).backward()

    for (grad_w, grad_b), w, b in zip(manual, weights, biases):
        torch.testing.assert_close(grad_w, w.grad)
        if bias:
            torch.testing.assert_close(grad_b, b.grad)
        else:
            assert grad_b is None


def test_none_when_weight_needs_no_gradient():
    layer = ManualLinear()
    x = torch.randn(3, 4, requires_grad=True)
    w = torch.randn(4, 2)  # frozen
    b = torch.randn(2, requires_grad=True)
    out = layer.forward(x, w, b)
    assert out.requires_grad  # because x and b need gradients
    grad_input, grad_weight, grad_bias = layer.backward(torch.ones(3, 2))
    assert grad_weight is None
    torch.testing.assert_close(grad_input, torch.ones(3, 2) @ w.t())
    torch.testing.assert_close(grad_bias, torch.full((2,), 3.0))


def test_output_needs_no_gradient_when_nothing_does():
    out = ManualLinear().forward(torch.randn(3, 4), torch.randn(4, 2))
    assert not out.requires_grad


def test_works_on_3d_input_like_the_function():
    x = torch.randn(2, 3, 4, requires_grad=True)
    w = torch.randn(4, 5, requires_grad=True)
    layer = ManualLinear()
    out = layer.forward(x, w)
    g = torch.randn(2, 3, 5)
    grad_input, grad_weight, grad_bias = layer.backward(g)
    Linear_Layer.apply(x, w).backward(g)
    torch.testing.assert_close(grad_input, x.grad)
    torch.testing.assert_close(grad_weight, w.grad)
    assert grad_bias is None and out.shape == (2, 3, 5)


def test_backward_before_forward():
    with pytest.raises(RuntimeError, match="backward was called before forward"):
        ManualLinear().backward(torch.ones(1, 1))


def test_backward_with_wrong_grad_shape():
    layer = ManualLinear()
    layer.forward(torch.randn(3, 4), torch.randn(4, 2, requires_grad=True))
    with pytest.raises(ValueError, match=r"grad_output must have the output's shape \(3, 2\), got \(2, 3\)"):
        layer.backward(torch.ones(2, 3))


def test_forward_validates_like_the_function():
    with pytest.raises(ValueError, match=r"ManualLinear.forward: input has 3 features"):
        ManualLinear().forward(torch.randn(2, 3), torch.randn(4, 2))


def test_manual_chain_through_an_activation():
    # the lesson's pattern: Linear -> Sigmoid -> Linear, chain rule by hand
    x = torch.randn(5, 3, dtype=torch.float64)
    w1 = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    w2 = torch.randn(4, 1, dtype=torch.float64, requires_grad=True)
    l1, l2 = ManualLinear(), ManualLinear()
    z = l1.forward(x, w1)
    s = torch.sigmoid(z.detach())
    y = l2.forward(s.requires_grad_(), w2)
    grad_s, grad_w2, _ = l2.backward(torch.ones_like(y))
    _, grad_w1, _ = l1.backward(grad_s * s * (1 - s))
    Linear_Layer.apply(Sigmoid.apply(Linear_Layer.apply(x, w1)), w2).sum().backward()
    torch.testing.assert_close(grad_w1, w1.grad)
    torch.testing.assert_close(grad_w2, w2.grad)
