"""``course_lib.models``: the course MLP and the custom-layers model."""

import pytest
import torch
from torch import nn

import course_lib
from course_lib import functions
from course_lib.layers import Linear, ScaledReLU
from course_lib.models import CustomModel, NeuralNet


def test_neural_net_architecture():
    model = NeuralNet()
    sizes = [(m.in_features, m.out_features) for m in (model.fc1, model.fc2, model.fc3)]
    assert sizes == [(784, 128), (128, 64), (64, 10)]
    assert all(isinstance(m, Linear) for m in (model.fc1, model.fc2, model.fc3))
    assert sum(p.numel() for p in model.parameters()) == 784 * 128 + 128 + 128 * 64 + 64 + 64 * 10 + 10
    assert NeuralNet(256).fc2.out_features == 128


def test_neural_net_matches_the_same_network_from_nn_linear():
    model = NeuralNet(32)
    reference = nn.Sequential(
        model.fc1.to_torch(), nn.ReLU(), model.fc2.to_torch(), nn.ReLU(), model.fc3.to_torch()
    )
    x = torch.randn(6, 784)
    torch.testing.assert_close(model(x), reference(x))


def test_neural_net_flattens_images():
    model = NeuralNet(16)
    images = torch.randn(3, 1, 28, 28)
    torch.testing.assert_close(model(images), model(images.reshape(3, 784)))
    assert model(images).shape == (3, 10)


def test_neural_net_prints_its_layers_in_order():
    """Lessons 1 and 7 print the model: the layers in the order they were created."""
    assert [name for name, _ in NeuralNet(16).named_children()] == ["fc1", "fc2", "fc3", "activation"]
    assert isinstance(NeuralNet(16).activation, nn.ReLU)


@pytest.mark.parametrize("num_units", [1, 0, -4, 2.5, True, "128"])
def test_neural_net_bad_arguments(num_units):
    with pytest.raises(ValueError, match=f"num_units must be an integer >= 2, got {num_units!r}"):
        NeuralNet(num_units)


def test_neural_net_wrong_input_size_is_explained():
    with pytest.raises(ValueError, match=r"input has 100 features .* weight expects 784"):
        NeuralNet(16)(torch.randn(2, 100))


def test_custom_model():
    model = CustomModel(input_size=10, hidden_size=5, output_size=1)
    assert isinstance(model.activation, ScaledReLU) and model.activation.scale == 0.5
    x = torch.randn(32, 10)
    out = model(x)
    assert out.shape == (32, 1)
    expected = model.layer2(0.5 * torch.relu(model.layer1(x)))
    torch.testing.assert_close(out, expected)


def test_top_level_exports():
    assert course_lib.Linear_Layer is functions.Linear_Layer
    assert course_lib.Linear is Linear
    assert course_lib.NeuralNet is NeuralNet
    from course_lib.manual import ManualLinear
    assert course_lib.ManualLinear is ManualLinear


def test_initialise_randn_redraws_from_a_standard_normal():
    from course_lib.models import initialise_

    model = NeuralNet(128)
    before = model.fc1.weight.detach().clone()
    assert initialise_(model, "default") is model
    assert torch.equal(model.fc1.weight, before)  # "default" keeps Linear's own init
    assert before.std() < 0.05  # nn.Linear's: 1/sqrt(784)/sqrt(3) ~ 0.02
    initialise_(model, "randn")
    weights = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert abs(weights.std().item() - 1.0) < 0.02 and abs(weights.mean().item()) < 0.02
    # the failure it demonstrates: first-layer outputs ~ sqrt(784) = 28 times the input scale
    h = model.fc1(torch.randn(256, 784))
    assert h.std() > 20
    with pytest.raises(ValueError, match="init must be one of default, randn, got 'xavier'"):
        initialise_(model, "xavier")
