"""Tests of course_lib/checks/backward.py: a hand-written backward against autograd, its mistakes named."""

import torch
import torch.nn.functional as F

from course_lib.checks import check_backward, check_relu_mlp_gradients, check_torch_layout_backward


def test_backward_check_for_relu_and_mse():
    assert check_backward(lambda g, x: g * (x > 0), torch.relu).passed
    report = check_backward(lambda g, x: g, torch.relu)  # forgot the mask
    assert report.failed_names() == ["gradient of input 0"]
    assert "largest error" in str(report)

    def mse_grad(g, pred, target):
        return g * 2 * (pred - target) / pred.numel()

    shapes = ((6, 1), (6, 1))
    assert check_backward(mse_grad, F.mse_loss, shapes=shapes).passed
    no_mean = check_backward(lambda g, p, t: g * 2 * (p - t), F.mse_loss, shapes=shapes)
    assert not no_mean.passed
    both = check_backward(lambda g, p, t: (mse_grad(g, p, t), -mse_grad(g, p, t)), F.mse_loss,
                          shapes=shapes, wrt=(0, 1))
    assert both.passed and len(both.lines) == 2
    assert "expected a tuple of 2 gradients" in str(
        check_backward(mse_grad, F.mse_loss, shapes=shapes, wrt=(0, 1)))


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
