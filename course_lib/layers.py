"""``nn.Module`` layers built on the hand-written Functions (``functions``; ``fast`` for ``Linear``)."""

import math
import numbers

import torch
from torch import nn

from . import fast
from .functions import LearnedSiLU, ReLU


def _check_size(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"Linear: {name} must be a positive integer, got {value!r}")
    if value <= 0:
        raise ValueError(f"Linear: {name} must be a positive integer, got {value}")
    return int(value)


class Linear(nn.Module):
    """A fully connected layer ``Y = X W + b`` computed by ``fast.FastLinear``.

    Unlike ``torch.nn.Linear`` the weight is stored as ``(in_features, out_features)``, the layout
    the lessons derive. Initialisation matches ``nn.Linear`` exactly: with the same seed, this
    layer's ``weight`` equals ``nn.Linear``'s ``weight.T`` and the biases are equal.

    Args:
        in_features: size of each input sample (the last dimension of the input).
        out_features: size of each output sample.
        bias: learn an additive bias of shape ``(out_features,)``.
        device, dtype: where and in which precision to create the parameters.
    """

    def __init__(self, in_features, out_features, bias=True, device=None, dtype=None):
        super().__init__()
        self.in_features = _check_size("in_features", in_features)
        self.out_features = _check_size("out_features", out_features)
        factory = {"device": device, "dtype": dtype}
        # Shape (in, out), but stored in memory column by column, exactly as nn.Linear stores its
        # (out, in) weight: x @ W then runs the very BLAS calls that F.linear runs.
        self.weight = nn.Parameter(torch.empty_strided(
            (self.in_features, self.out_features), (1, self.in_features), **factory))
        if bias:
            self.bias = nn.Parameter(torch.empty(self.out_features, **factory))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Uniform in ``±1/sqrt(in_features)`` for weight and bias, drawn as ``nn.Linear`` draws them."""
        with torch.no_grad():
            # Fill the (out, in) view, which is contiguous, so the random numbers land where
            # nn.Linear puts them. kaiming_uniform_ with a=sqrt(5) is nn.Linear's own choice: it
            # reads fan_in from the view's second dimension and gives bound = 1/sqrt(in_features).
            nn.init.kaiming_uniform_(self.weight.t(), a=math.sqrt(5))
            if self.bias is not None:
                bound = 1 / math.sqrt(self.in_features)
                nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, input):
        return fast.linear(input, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}"
        )

    @classmethod
    def from_torch(cls, layer: nn.Linear) -> "Linear":
        """A ``Linear`` computing exactly what ``layer`` computes (its weight transposed)."""
        if not isinstance(layer, nn.Linear):
            raise TypeError(f"Linear.from_torch expects a torch.nn.Linear, got {type(layer).__name__}")
        w = layer.weight
        new = torch.nn.utils.skip_init(
            cls, layer.in_features, layer.out_features, bias=layer.bias is not None,
            device=w.device, dtype=w.dtype,
        )
        with torch.no_grad():
            new.weight.copy_(w.t())
            if layer.bias is not None:
                new.bias.copy_(layer.bias)
        return new

    def to_torch(self) -> nn.Linear:
        """A ``torch.nn.Linear`` computing exactly what this layer computes (weight transposed)."""
        w = self.weight
        layer = torch.nn.utils.skip_init(
            nn.Linear, self.in_features, self.out_features, bias=self.bias is not None,
            device=w.device, dtype=w.dtype,
        )
        with torch.no_grad():
            layer.weight.copy_(w.t())
            if self.bias is not None:
                layer.bias.copy_(self.bias)
        return layer


class ScaledReLU(nn.Module):
    """``y = scale * max(0, x)``: a ReLU whose positive slope is a fixed number."""

    def __init__(self, scale: float = 1.0):
        super().__init__()
        if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not math.isfinite(scale):
            raise ValueError(f"ScaledReLU: scale must be a finite number, got {scale!r}")
        self.scale = float(scale)

    def forward(self, x):
        return ReLU.apply(x) * self.scale

    def extra_repr(self) -> str:
        return f"scale={self.scale}"


class LearnedSiLUModule(nn.Module):
    """``y = slope * x * sigmoid(x)`` with ``slope`` a learnable scalar, trained with the network."""

    def __init__(self, init_slope: float = 1.0, device=None, dtype=None):
        super().__init__()
        if isinstance(init_slope, bool) or not isinstance(init_slope, numbers.Real) \
                or not math.isfinite(init_slope):
            raise ValueError(f"LearnedSiLUModule: init_slope must be a finite number, got {init_slope!r}")
        self.slope = nn.Parameter(torch.tensor(float(init_slope), device=device, dtype=dtype))

    def forward(self, x):
        return LearnedSiLU.apply(x, self.slope)

    def extra_repr(self) -> str:
        return f"slope={self.slope.item():.4g}"
