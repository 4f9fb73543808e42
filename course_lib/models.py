"""The course's models, built from ``course_lib.layers.Linear``."""

import torch
from torch import nn

from .layers import Linear, ScaledReLU


class NeuralNet(nn.Module):
    """The lesson's MNIST classifier: 784 -> num_units -> num_units//2 -> 10.

    Each hidden layer is a ``course_lib.layers.Linear`` followed by a ReLU; the last layer returns
    logits (``nn.CrossEntropyLoss`` applies the softmax). Images of shape ``(B, 1, 28, 28)`` are
    flattened to ``(B, 784)``.

    Args:
        num_units: width of the first hidden layer (the second has ``num_units // 2``).
    """

    def __init__(self, num_units: int = 128):
        super().__init__()
        if isinstance(num_units, bool) or not isinstance(num_units, int) or num_units < 2:
            raise ValueError(f"NeuralNet: num_units must be an integer >= 2, got {num_units!r}")
        self.num_units = num_units
        self.fc1 = Linear(784, num_units)
        self.fc2 = Linear(num_units, num_units // 2)
        self.fc3 = Linear(num_units // 2, 10)
        self.activation = nn.ReLU()

    def forward(self, x):
        if x.dim() > 2:
            x = x.flatten(1)  # (B, 1, 28, 28) -> (B, 784)
        x = self.activation(self.fc1(x))
        x = self.activation(self.fc2(x))
        return self.fc3(x)


INITS = ("default", "randn")


def initialise_(model: nn.Module, init: str = "default") -> nn.Module:
    """Re-initialise ``model``'s parameters in place; return it.

    ``default`` keeps ``Linear``'s own initialisation (``nn.Linear``'s: uniform in
    ``±1/sqrt(in_features)``). ``randn`` redraws every weight and bias from a standard normal,
    as the source lesson's ``torch.randn`` did: for a 784-input layer that makes each output about
    28 times larger than it should be, and training stalls. It is kept to show that failure.
    """
    if init not in INITS:
        raise ValueError(f"init must be one of {', '.join(INITS)}, got {init!r}")
    if init == "randn":
        with torch.no_grad():
            for p in model.parameters():
                p.normal_()
    return model


class CustomModel(nn.Module):
    """The custom-layers lesson's model: Linear -> ScaledReLU(0.5) -> Linear."""

    def __init__(self, input_size: int, hidden_size: int, output_size: int):
        super().__init__()
        self.layer1 = Linear(input_size, hidden_size)
        self.activation = ScaledReLU(scale=0.5)
        self.layer2 = Linear(hidden_size, output_size)

    def forward(self, x):
        return self.layer2(self.activation(self.layer1(x)))
