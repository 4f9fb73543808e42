"""``course_lib.config``: ``TrainConfig``'s validation and defaults, and ``make_optimizer``'s update
rules and learning-rate schedule, each checked against its formula."""

import dataclasses
import math

import pytest
import torch
from torch import nn

from course_lib.config import TrainConfig, make_optimizer
from course_lib.models import NeuralNet

# ---------------------------------------------------------------------------------------------
# TrainConfig: one place that checks every setting
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("field,value", [
    ("dataset", "mnsit"), ("epochs", 0), ("batch_size", -1), ("lr", 0.0), ("lr", float("nan")),
    ("optimizer", "rmsprop"), ("momentum", 1.0), ("max_batches", 0), ("shift", 9),
    ("schedule", "step"), ("num_units", 1), ("init", "xavier"),
])
def test_bad_config_values_are_named(field, value):
    with pytest.raises(ValueError, match=field):
        TrainConfig(**{field: value})


def test_config_is_frozen_and_replace_is_validated_too():
    config = TrainConfig(epochs=3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.epochs = 5
    assert dataclasses.replace(config, epochs=5).epochs == 5 and config.epochs == 3
    with pytest.raises(ValueError, match="TrainConfig: epochs must be a positive integer, got 0"):
        dataclasses.replace(config, epochs=0)


def test_lr_defaults_per_optimizer():
    assert TrainConfig().learning_rate == 0.05
    assert TrainConfig(optimizer="adam").learning_rate == 0.002
    assert TrainConfig(optimizer="adam", lr=0.01).learning_rate == 0.01


# ---------------------------------------------------------------------------------------------
# make_optimizer: the update rules and the learning-rate schedule
# ---------------------------------------------------------------------------------------------



def _lrs(config, steps_per_epoch):
    """The learning rate before each of the run's batches, and after the last one."""
    optimizer, scheduler = make_optimizer(config, NeuralNet(8), steps_per_epoch)
    lrs = []
    for _ in range(config.epochs * steps_per_epoch + 1):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_cosine_schedule_follows_its_formula_down_to_zero():
    config = TrainConfig(epochs=2, lr=0.4)
    expected = [0.4 * (1 + math.cos(math.pi * t / 10)) / 2 for t in range(11)]  # T = 2 x 5 batches
    assert _lrs(config, 5) == pytest.approx(expected, abs=1e-12)
    assert _lrs(config, 5)[5] == pytest.approx(0.2) and _lrs(config, 5)[-1] == pytest.approx(0.0, abs=1e-12)
    assert _lrs(dataclasses.replace(config, schedule="constant"), 5) == [0.4] * 11


def _one_step(config, grad: float, value: float = 1.0) -> float:
    """A parameter's value after one optimizer step from ``value`` with gradient ``grad``."""
    model = nn.Linear(1, 1, bias=False)
    optimizer, _ = make_optimizer(config, model, steps_per_epoch=1)
    with torch.no_grad():
        model.weight.fill_(value)
    model.weight.grad = torch.full_like(model.weight, grad)
    optimizer.step()
    return model.weight.item()


def test_sgd_takes_nesterov_steps():
    """Nesterov momentum's first step is lr * (1 + momentum) * grad (PyTorch's SGD documentation);
    plain momentum's would be lr * grad."""
    sgd = TrainConfig(lr=0.1, momentum=0.9)
    assert _one_step(sgd, grad=2.0) == pytest.approx(1.0 - 0.1 * 1.9 * 2.0)
    assert _one_step(dataclasses.replace(sgd, momentum=0.0), grad=2.0) == pytest.approx(1.0 - 0.1 * 2.0)


def test_weight_decay_pulls_the_weights_towards_zero():
    """With a zero gradient, SGD's step is lr * (1 + momentum) * weight_decay * w."""
    decayed = TrainConfig(lr=0.1, momentum=0.9, weight_decay=0.5)
    assert _one_step(decayed, grad=0.0, value=2.0) == pytest.approx(2.0 - 0.1 * 1.9 * 0.5 * 2.0)
    assert _one_step(dataclasses.replace(decayed, weight_decay=0.0), grad=0.0, value=2.0) == 2.0
    adam = TrainConfig(optimizer="adam", lr=0.01, weight_decay=0.5)
    assert _one_step(adam, grad=0.0, value=2.0) < 2.0  # Adam adds weight_decay * w to the gradient


def test_adam_first_step_is_lr_times_the_gradients_sign():
    """Adam's first step, bias-corrected, is lr * g / (|g| + eps): lr in the gradient's direction,
    whatever the gradient's size; its default lr is 0.002."""
    adam = TrainConfig(optimizer="adam")
    optimizer, _ = make_optimizer(adam, NeuralNet(8), 1)
    assert isinstance(optimizer, torch.optim.Adam) and optimizer.param_groups[0]["lr"] == 0.002
    for grad in (1e-3, 5.0, -40.0):
        assert _one_step(adam, grad=grad) == pytest.approx(1.0 - 0.002 * math.copysign(1, grad), rel=1e-5)
