"""``course_lib.manual``: every hand-written backward must agree with autograd and PyTorch."""

import pytest
import torch
import torch.nn.functional as F
from conftest import DEVICES
from hypothesis import given, settings
from hypothesis import strategies as st

from course_lib import ManualLinear, NeuralNet
from course_lib.manual import ManualMLP, cross_entropy, cross_entropy_backward, train_step


def f_linear(x, w, b=None):
    """The independent oracle: autograd through PyTorch's own linear, weight in its (out, in) layout."""
    return F.linear(x, w.t(), b)


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

    # autograd through F.linear on the same parameters
    h = x
    for w, b in zip(weights, biases):
        h = f_linear(h, w, b)
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


def test_works_on_3d_input_like_f_linear():
    x = torch.randn(2, 3, 4, requires_grad=True)
    w = torch.randn(4, 5, requires_grad=True)
    layer = ManualLinear()
    out = layer.forward(x, w)
    g = torch.randn(2, 3, 5)
    grad_input, grad_weight, grad_bias = layer.backward(g)
    f_linear(x, w).backward(g)
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
    f_linear(torch.sigmoid(f_linear(x, w1)), w2).sum().backward()  # autograd, not linear_backward
    torch.testing.assert_close(grad_w1, w1.grad)
    torch.testing.assert_close(grad_w2, w2.grad)


# ---------------------------------------------------------------------------------------------
# Softmax cross-entropy, against F.cross_entropy and its autograd
# ---------------------------------------------------------------------------------------------

def _ce_cases():
    g = torch.Generator().manual_seed(0)
    extreme = torch.tensor([[1000.0, -1000.0, 0.0], [-1000.0, -1000.0, 1000.0], [1000.0, 1000.0, -1000.0]])
    return [  # (name, logits in float64, labels)
        ("ordinary", torch.randn(6, 10, generator=g, dtype=torch.float64), torch.tensor([0, 3, 9, 9, 5, 1])),
        ("batch of one", torch.randn(1, 4, generator=g, dtype=torch.float64), torch.tensor([2])),
        ("one class", torch.randn(3, 1, generator=g, dtype=torch.float64), torch.zeros(3, dtype=torch.long)),
        ("logits of +-1000, right and wrong", extreme.double(), torch.tensor([0, 1, 2])),
        ("large and shifted", 500 + 30 * torch.randn(4, 5, generator=g, dtype=torch.float64), torch.tensor([4, 0, 1, 1])),
    ]


CE_CASES = _ce_cases()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("case", CE_CASES, ids=[c[0] for c in CE_CASES])
def test_cross_entropy_and_its_backward_match_pytorch(case, reduction, dtype):
    _, logits, labels = case
    logits = logits.to(dtype)
    leaf = logits.clone().requires_grad_()
    expected = F.cross_entropy(leaf, labels, reduction=reduction)
    expected.backward()
    loss = cross_entropy(logits, labels, reduction)
    grad = cross_entropy_backward(logits, labels, reduction)
    assert loss.dtype == grad.dtype == dtype and torch.isfinite(loss) and torch.isfinite(grad).all()
    torch.testing.assert_close(loss, expected.detach())
    torch.testing.assert_close(grad, leaf.grad)
    torch.testing.assert_close(grad.sum(1), torch.zeros(len(labels), dtype=dtype))  # rows sum to 0


def test_extreme_logits_need_the_log_sum_exp():
    logits = torch.tensor([[1000.0, 0.0, -1000.0]])
    naive = -torch.log(logits.exp() / logits.exp().sum(1, keepdim=True))[0, 0]
    assert torch.isnan(naive)  # exp(1000) overflows to inf, and inf / inf is NaN
    assert cross_entropy(logits, torch.tensor([0])).item() == 0.0
    assert cross_entropy(logits, torch.tensor([2])).item() == 2000.0


@given(batch=st.integers(0, 6), classes=st.integers(1, 7), seed=st.integers(0, 2**16),
       scale=st.sampled_from([1.0, 100.0]))
@settings(max_examples=30, deadline=None)
def test_backward_is_the_derivative_of_the_forward(batch, classes, seed, scale):
    """Autograd through our own forward gives our backward, for any shape, an empty batch included."""
    g = torch.Generator().manual_seed(seed)
    logits = (scale * torch.randn(batch, classes, generator=g, dtype=torch.float64)).requires_grad_()
    labels = torch.randint(classes, (batch,), generator=g)
    for reduction in ("mean", "sum"):
        (got,) = torch.autograd.grad(cross_entropy(logits, labels, reduction), logits)
        torch.testing.assert_close(cross_entropy_backward(logits.detach(), labels, reduction), got)


def test_empty_batch_behaves_like_pytorch():
    logits, labels = torch.zeros(0, 10, dtype=torch.float64), torch.zeros(0, dtype=torch.long)
    assert torch.isnan(cross_entropy(logits, labels)) and torch.isnan(F.cross_entropy(logits, labels))
    assert cross_entropy(logits, labels, "sum").item() == 0.0
    for reduction in ("mean", "sum"):
        grad = cross_entropy_backward(logits, labels, reduction)
        assert grad.shape == (0, 10) and not torch.isnan(grad).any()


def test_nan_and_inf_logits_propagate_like_pytorch():
    inf, nan = float("inf"), float("nan")
    logits = torch.tensor([[inf, 0.0], [1.0, -inf], [nan, 1.0], [2.0, 1.0]], dtype=torch.float64)
    labels = torch.tensor([0, 1, 1, 0])
    for i in range(len(labels)):  # row by row: one NaN row would make the mean NaN
        row, label = logits[i:i + 1], labels[i:i + 1]
        torch.testing.assert_close(cross_entropy(row, label, "sum"), F.cross_entropy(row, label, reduction="sum"),
                                   equal_nan=True)


def test_non_contiguous_logits_and_int32_labels():
    logits = torch.randn(10, 5, dtype=torch.float64).T  # (5, 10), a transposed view
    labels = torch.tensor([0, 9, 3, 3, 7], dtype=torch.int32)
    assert not logits.is_contiguous()
    torch.testing.assert_close(cross_entropy(logits, labels), F.cross_entropy(logits, labels.long()))


@pytest.mark.parametrize("fn", [cross_entropy, cross_entropy_backward])
@pytest.mark.parametrize("logits, labels, error, message", [
    (torch.zeros(5, 10), torch.tensor([1, 2, 3, 10, 0]), ValueError,
     r"labels\[3\] is 10, out of range for 10 classes \(logits shape \(5, 10\)\): every label must be in 0\.\.9"),
    (torch.zeros(3, 4), torch.tensor([0, -1, 2]), ValueError, r"labels\[1\] is -1, out of range for 4 classes"),
    (torch.zeros(3, 4), torch.tensor([0.0, 1.0, 2.0]), TypeError, r"labels must be integer class indices .* got dtype torch.float32"),
    (torch.zeros(3, 4), torch.tensor([[0], [1], [2]]), ValueError, r"labels must have shape \(3,\), .* got shape \(3, 1\)"),
    (torch.zeros(3, 4), torch.tensor([0, 1]), ValueError, r"labels must have shape \(3,\)"),
    (torch.zeros(4), torch.tensor([0]), ValueError, r"logits must have shape \(batch, classes\) .* got shape \(4,\) .*unsqueeze\(0\)"),
    (torch.zeros(3, 0), torch.tensor([0, 0, 0]), ValueError, r"logits must have shape \(batch, classes\) with at least one class, got shape \(3, 0\)"),
    (torch.zeros(3, 4, dtype=torch.long), torch.tensor([0, 1, 2]), TypeError, r"logits must be a floating-point tensor"),
    (torch.zeros(3, 4), [0, 1, 2], TypeError, r"labels must be a tensor of class indices, got list"),
])
def test_bad_logits_or_labels_get_a_clear_error(fn, logits, labels, error, message):
    with pytest.raises(error, match=rf"{fn.__name__}: {message}"):
        fn(logits, labels)


def test_unknown_reduction_is_refused():
    with pytest.raises(ValueError, match=r"reduction must be 'mean' or 'sum', got 'none'"):
        cross_entropy_backward(torch.zeros(2, 3), torch.tensor([0, 1]), "none")


# ---------------------------------------------------------------------------------------------
# ManualMLP: the 784-128-64-10 network with no autograd
# ---------------------------------------------------------------------------------------------

def _batch(batch=8, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 1, 28, 28, generator=g, dtype=dtype), torch.randint(10, (batch,), generator=g)


@pytest.mark.parametrize("num_units", [128, 6])
def test_same_initial_weights_as_neuralnet_from_the_same_seed(num_units):
    torch.manual_seed(3)
    mlp = ManualMLP(num_units)
    torch.manual_seed(3)
    net = NeuralNet(num_units)
    for k in (1, 2, 3):
        layer = getattr(net, f"fc{k}")
        assert torch.equal(mlp.params[f"weight{k}"], layer.weight) and torch.equal(mlp.params[f"bias{k}"], layer.bias)
    assert mlp.params["weight2"].shape == (num_units, num_units // 2)
    assert not any(p.requires_grad for p in mlp.params.values())


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_every_gradient_matches_autograd(reduction):
    torch.manual_seed(0)
    net = NeuralNet().double()
    mlp = ManualMLP.from_model(net)
    images, labels = _batch()
    logits = mlp.forward(images)
    got = mlp.backward(cross_entropy_backward(logits, labels, reduction))
    # reference 1: the course's NeuralNet, differentiated by autograd
    F.cross_entropy(net(images), labels, reduction=reduction).backward()
    for k in (1, 2, 3):
        torch.testing.assert_close(got[f"weight{k}"], getattr(net, f"fc{k}").weight.grad)
        torch.testing.assert_close(got[f"bias{k}"], getattr(net, f"fc{k}").bias.grad)
    # reference 2: PyTorch's own ops, every intermediate kept
    w = {n: p.clone().requires_grad_() for n, p in mlp.params.items()}
    x = images.flatten(1)
    z1 = F.linear(x, w["weight1"].T, w["bias1"])
    h1 = torch.relu(z1)
    z2 = F.linear(h1, w["weight2"].T, w["bias2"])
    h2 = torch.relu(z2)
    out = F.linear(h2, w["weight3"].T, w["bias3"])
    inner = {"z1": z1, "h1": h1, "z2": z2, "h2": h2, "logits": out}
    for t in inner.values():
        t.retain_grad()
    F.cross_entropy(out, labels, reduction=reduction).backward()
    for name, t in inner.items():
        torch.testing.assert_close(got[name], t.grad, msg=name)
    for name, p in w.items():
        torch.testing.assert_close(got[name], p.grad, msg=name)
    assert set(got) == set(inner) | set(w)


def test_relu_gradient_is_exactly_zero_where_the_input_was_not_positive():
    torch.manual_seed(0)
    mlp = ManualMLP(dtype=torch.float64)
    images, labels = _batch()
    logits = mlp.forward(images)
    g = mlp.backward(cross_entropy_backward(logits, labels))
    for k in (1, 2):
        off = mlp.cache[f"z{k}"] <= 0
        assert off.any() and (g[f"z{k}"][off] == 0).all()
        assert torch.equal(g[f"z{k}"][~off], g[f"h{k}"][~off])


@pytest.fixture
def one_thread():
    """Small matrices: one thread does them fastest, and several fight on a busy CI machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_100_steps_by_hand_follow_autograd_and_sgd_to_1e_10(one_thread):
    torch.manual_seed(0)
    net = NeuralNet().double()
    mlp = ManualMLP.from_model(net)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    batches = [_batch(16, seed=s) for s in range(4)]
    losses = []
    for step in range(100):
        images, labels = batches[step % len(batches)]
        manual_loss = train_step(mlp, images, labels, 0.1)
        optimizer.zero_grad()
        loss = F.cross_entropy(net(images), labels)
        loss.backward()
        optimizer.step()
        assert abs(manual_loss.item() - loss.item()) < 1e-10
        losses.append(loss.item())
    for k in (1, 2, 3):
        assert (mlp.params[f"weight{k}"] - getattr(net, f"fc{k}").weight).abs().max() < 1e-10
        assert (mlp.params[f"bias{k}"] - getattr(net, f"fc{k}").bias).abs().max() < 1e-10
    assert losses[-1] < 0.1 * losses[0]  # the 64 samples are learnt: the two paths really moved


def test_gradients_accumulate_until_zero_grad_and_step_needs_them():
    torch.manual_seed(0)
    mlp = ManualMLP(dtype=torch.float64)
    images, labels = _batch()
    with pytest.raises(RuntimeError, match="no gradient for weight1, bias1, .*call backward first"):
        mlp.step(0.1)
    grad = cross_entropy_backward(mlp.forward(images), labels)
    once = mlp.backward(grad)["weight2"]
    mlp.backward(grad)
    torch.testing.assert_close(mlp.grads["weight2"], 2 * once)  # added, as autograd adds into .grad
    before = mlp.params["bias3"].clone()
    mlp.step(0.5)
    torch.testing.assert_close(mlp.params["bias3"], before - 0.5 * mlp.grads["bias3"])
    mlp.zero_grad()
    assert all(g is None for g in mlp.grads.values())


def test_forward_accepts_images_or_flat_rows_and_records_no_graph():
    torch.manual_seed(0)
    mlp = ManualMLP(dtype=torch.float64)
    images, _ = _batch(3)
    flat = mlp.forward(images.flatten(1)).clone()
    out = mlp.forward(images.requires_grad_())
    torch.testing.assert_close(out, flat)
    assert out.grad_fn is None and not out.requires_grad


def test_from_model_copies_and_does_not_alias():
    torch.manual_seed(0)
    net = NeuralNet()
    mlp = ManualMLP.from_model(net, dtype=torch.float64)
    assert mlp.params["weight1"].dtype == torch.float64
    mlp.params["bias1"] += 1
    assert not torch.equal(mlp.params["bias1"].float(), net.fc1.bias)


def tanh_net():
    net = NeuralNet()
    net.activation = torch.nn.Tanh()
    return net


@pytest.mark.parametrize("call, error, message", [
    (lambda m: m.forward(torch.randn(2, 783)), ValueError, r"ManualMLP.forward: input has 783 features"),
    (lambda m: m.forward(torch.randn(784)), ValueError, r"input must be a batch \(B, 784\) .* got shape \(784,\)"),
    (lambda m: m.forward(torch.randn(2, 784, dtype=torch.float64)), TypeError, r"input has dtype torch.float64 but weight has dtype torch.float32"),
    (lambda m: m.backward(torch.ones(2, 10)), RuntimeError, r"backward was called before forward"),
    (lambda m: (m.forward(torch.randn(2, 784)), m.backward(torch.ones(10, 2))), ValueError,
     r"grad_logits must have the logits' shape \(2, 10\), got \(10, 2\)"),
    (lambda m: m.step(float("nan")), ValueError, r"lr must be a finite number >= 0, got nan"),
    (lambda m: ManualMLP.from_model(tanh_net()), ValueError, r"ReLU only; .*Tanh"),
    (lambda m: ManualMLP.from_model(torch.nn.Linear(784, 10)), TypeError, r"expects a course_lib NeuralNet, got Linear"),
])
def test_manual_mlp_misuse_gets_a_clear_error(call, error, message):
    torch.manual_seed(0)
    with pytest.raises(error, match=message):
        call(ManualMLP())


@pytest.mark.parametrize("device", DEVICES)
def test_manual_mlp_on_each_device_matches_the_cpu(device):
    torch.manual_seed(0)
    cpu = ManualMLP(dtype=torch.float64)
    torch.manual_seed(0)
    mlp = ManualMLP(dtype=torch.float64, device=device)
    images, labels = _batch()
    for m, x, y in ((cpu, images, labels), (mlp, images.to(device), labels.to(device))):
        train_step(m, x, y, 0.1)
    for name, p in mlp.params.items():
        assert p.device.type == device
        torch.testing.assert_close(p.cpu(), cpu.params[name])


def test_an_empty_batch_leaves_the_network_unchanged():
    torch.manual_seed(0)
    mlp = ManualMLP(dtype=torch.float64)
    before = {n: p.clone() for n, p in mlp.params.items()}
    loss = train_step(mlp, torch.zeros(0, 1, 28, 28, dtype=torch.float64), torch.zeros(0, dtype=torch.long), 0.1)
    assert torch.isnan(loss)  # the mean of no losses, as F.cross_entropy gives
    assert all(torch.equal(mlp.params[n], p) for n, p in before.items())
    assert all(g is not None and not g.any() for g in mlp.grads.values())
