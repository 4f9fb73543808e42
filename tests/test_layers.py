"""``course_lib.layers``: Linear against nn.Linear, the activation modules, bad sizes."""

import copy
import io
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import DEVICES
from torch import nn

from course_lib.layers import LearnedSiLUModule, Linear, ScaledReLU
from course_lib.models import NeuralNet


@pytest.mark.parametrize("bias", [True, False])
def test_same_seed_same_numbers_as_nn_linear(bias):
    torch.manual_seed(7)
    ours = Linear(20, 6, bias=bias)
    torch.manual_seed(7)
    theirs = nn.Linear(20, 6, bias=bias)
    assert torch.equal(ours.weight, theirs.weight.t())
    if bias:
        assert torch.equal(ours.bias, theirs.bias)
    else:
        assert ours.bias is None
    # and the random generator is left in the same state as nn.Linear leaves it
    torch.manual_seed(7)
    Linear(20, 6, bias=bias)
    after_ours = torch.rand(4)
    torch.manual_seed(7)
    nn.Linear(20, 6, bias=bias)
    assert torch.equal(after_ours, torch.rand(4))


def test_initial_distribution_matches_nn_linear():
    in_f, out_f = 400, 300
    ours, theirs = Linear(in_f, out_f), nn.Linear(in_f, out_f)
    bound = 1 / math.sqrt(in_f)
    for a, b in [(ours.weight, theirs.weight), (ours.bias, theirs.bias)]:
        assert a.abs().max() <= bound and b.abs().max() <= bound
        # both close to the uniform distribution's mean 0 and std bound/sqrt(3)
        n = a.numel()
        assert abs(a.mean().item()) < 4 * bound / math.sqrt(3 * n)
        assert abs(a.std().item() - bound / math.sqrt(3)) < 0.05 * bound / math.sqrt(3)
        assert abs(a.std().item() - b.std().item()) < 0.05 * bound
        # spread reaches the bounds: not a narrower distribution
        assert a.max() > 0.95 * bound and a.min() < -0.95 * bound


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_round_trip_with_nn_linear(device, bias, dtype):
    theirs = nn.Linear(7, 4, bias=bias, device=device, dtype=dtype)
    ours = Linear.from_torch(theirs)
    back = ours.to_torch()
    assert ours.weight.shape == (7, 4) and back.weight.shape == (4, 7)
    assert ours.weight.dtype == dtype and ours.weight.device.type == device
    x = torch.randn(5, 3, 7, device=device, dtype=dtype)
    torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=0)
    torch.testing.assert_close(back(x), theirs(x), rtol=0, atol=0)
    # gradients agree too (transposed for the weight)
    ours(x).square().sum().backward()
    theirs(x).square().sum().backward()
    torch.testing.assert_close(ours.weight.grad, theirs.weight.grad.t())
    if bias:
        torch.testing.assert_close(ours.bias.grad, theirs.bias.grad)


def test_conversions_copy_instead_of_sharing():
    ours = Linear(3, 2)
    theirs = ours.to_torch()
    with torch.no_grad():
        theirs.weight.zero_()
    assert ours.weight.abs().sum() > 0
    back = Linear.from_torch(theirs)
    with torch.no_grad():
        back.weight.fill_(1.0)
    assert theirs.weight.abs().sum() == 0


def test_from_torch_rejects_other_modules():
    with pytest.raises(TypeError, match="expects a torch.nn.Linear, got Conv1d"):
        Linear.from_torch(nn.Conv1d(1, 1, 1))


def test_weight_is_stored_like_nn_linear_and_gradient_needs_no_copy():
    layer = Linear(5, 3)
    assert layer.weight.shape == (5, 3)
    assert layer.weight.stride() == (1, 5)  # nn.Linear's (3, 5) memory, seen as (5, 3)
    layer(torch.randn(4, 5)).sum().backward()
    assert layer.weight.grad.stride() == layer.weight.stride()


def test_reset_parameters_redraws_within_bounds():
    layer = Linear(50, 10)
    before = layer.weight.detach().clone()
    with torch.no_grad():
        layer.weight.fill_(5.0)
        layer.bias.fill_(5.0)
    layer.reset_parameters()
    assert layer.weight.abs().max() <= 1 / math.sqrt(50)
    assert layer.bias.abs().max() <= 1 / math.sqrt(50)
    assert not torch.equal(layer.weight, before)


def test_extra_repr():
    assert repr(Linear(784, 128)) == "Linear(in_features=784, out_features=128, bias=True)"
    assert repr(Linear(3, 2, bias=False)) == "Linear(in_features=3, out_features=2, bias=False)"


def test_state_dict_round_trip_with_weights_only():
    layer = Linear(6, 4)
    buf = io.BytesIO()
    torch.save(layer.state_dict(), buf)
    buf.seek(0)
    fresh = Linear(6, 4)
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    x = torch.randn(2, 6)
    assert torch.equal(fresh(x), layer(x))


@pytest.mark.parametrize("args,error,message", [
    ((0, 5), ValueError, "in_features must be a positive integer, got 0"),
    ((5, -1), ValueError, "out_features must be a positive integer, got -1"),
    ((2.5, 3), TypeError, "in_features must be a positive integer, got 2.5"),
    ((True, 3), TypeError, "in_features must be a positive integer, got True"),
])
def test_bad_sizes(args, error, message):
    with pytest.raises(error, match=message):
        Linear(*args)


def test_layer_reports_wrong_feature_count():
    with pytest.raises(ValueError, match=r"input has 10 features \(input shape \(2, 10\)\), but weight expects 784"):
        Linear(784, 128)(torch.randn(2, 10))


def test_layer_reports_dtype_mismatch():
    with pytest.raises(TypeError, match="input has dtype torch.float64 but weight has dtype torch.float32"):
        Linear(4, 2)(torch.randn(3, 4, dtype=torch.float64))


def test_scaled_relu():
    x = torch.randn(4, 5, requires_grad=True)
    y = ScaledReLU(0.5)(x)
    torch.testing.assert_close(y, 0.5 * torch.relu(x))
    y.sum().backward()
    torch.testing.assert_close(x.grad, 0.5 * (x > 0).float())
    assert repr(ScaledReLU(2)) == "ScaledReLU(scale=2.0)"
    with pytest.raises(ValueError, match="scale must be a finite number, got nan"):
        ScaledReLU(float("nan"))


def test_learned_silu_module_learns_its_slope():
    module = LearnedSiLUModule(init_slope=0.5)
    assert isinstance(module.slope, nn.Parameter) and module.slope.item() == 0.5
    x = torch.randn(8, 3)
    y = module(x)
    torch.testing.assert_close(y, 0.5 * F.silu(x))
    y.sum().backward()
    torch.testing.assert_close(module.slope.grad, F.silu(x).sum())
    # one SGD step on a loss that wants a larger slope moves it up
    opt = torch.optim.SGD(module.parameters(), lr=0.1)
    opt.zero_grad()
    (-(module(x.abs() + 1)).sum()).backward()
    opt.step()
    assert module.slope.item() > 0.5
    assert repr(LearnedSiLUModule(1.5)) == "LearnedSiLUModule(slope=1.5)"


# ------------------------------------------------------------------------------------------
# The course model under today's tools: torch.compile and autocast.
# ------------------------------------------------------------------------------------------


def sgd_step(model, x, target, lr=0.1):
    """One training step; returns the loss and the gradients it applied."""
    model.zero_grad()
    loss = F.cross_entropy(model(x), target)
    loss.backward()
    grads = {name.removeprefix("_orig_mod."): p.grad.clone() for name, p in model.named_parameters()}
    with torch.no_grad():
        for p in model.parameters():
            p -= lr * p.grad
    return loss.detach(), grads


@pytest.mark.slow
def test_compiled_training_step_equals_the_eager_step():
    """NeuralNet compiles with no graph break (fullgraph) and steps exactly as eager does."""
    torch._dynamo.reset()
    eager = NeuralNet(num_units=16)
    compiled_net = copy.deepcopy(eager)
    compiled = torch.compile(compiled_net, fullgraph=True)
    g = torch.Generator().manual_seed(3)
    x, target = torch.randn(32, 1, 28, 28, generator=g), torch.randint(0, 10, (32,), generator=g)
    for _ in range(2):
        loss, grads = sgd_step(eager, x, target)
        compiled_loss, compiled_grads = sgd_step(compiled, x, target)
        torch.testing.assert_close(compiled_loss, loss)
        for name in grads:
            torch.testing.assert_close(compiled_grads[name], grads[name], rtol=1e-4, atol=1e-6)
    assert compiled_net.fc1.weight.grad.stride() == compiled_net.fc1.weight.stride()


def test_model_trains_under_autocast_with_float32_gradients():
    torch.manual_seed(0)
    model = NeuralNet(num_units=32)
    reference = copy.deepcopy(model)
    for layer in ("fc1", "fc2", "fc3"):  # the same numbers in nn.Linear layers
        setattr(reference, layer, getattr(model, layer).to_torch())
    x, target = torch.randn(64, 784), torch.randint(0, 10, (64,))
    losses = []
    for _ in range(5):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(x)
            reference_logits = reference(x)
        assert logits.dtype == reference_logits.dtype == torch.bfloat16
        assert torch.equal(logits, reference_logits)  # the same bf16 matmuls as F.linear
        model.zero_grad()
        loss = F.cross_entropy(logits, target)
        loss.backward()
        assert all(p.grad.dtype == torch.float32 for p in model.parameters())
        with torch.no_grad():
            for p in model.parameters():
                p -= 0.5 * p.grad
        reference.load_state_dict(
            {k: (v.t() if k.endswith("weight") else v) for k, v in model.state_dict().items()})
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses
