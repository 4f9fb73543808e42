"""Autograd Functions written by hand: the Linear layer and a gallery of element-wise ops.

Every class here is a ``torch.autograd.Function`` with a static ``forward(ctx, ...)`` that computes
the value and a static ``backward(ctx, grad_output)`` that applies the chain rule:
``grad_input = grad_output * (d output / d input)``. Backward passes are written with ordinary
(differentiable) torch ops, so double backward works too (``torch.autograd.gradgradcheck``).
"""

import torch
from torch import Tensor

# ---------------------------------------------------------------------------------------------
# Input checks: a clear message before any matmul runs, instead of an opaque error from inside torch.
# ---------------------------------------------------------------------------------------------


def _shape(t: Tensor) -> tuple:
    return tuple(t.shape)


def check_floating(name: str, t, where: str) -> None:
    """Raise ``TypeError`` unless ``t`` is a floating-point tensor."""
    if not isinstance(t, Tensor):
        raise TypeError(f"{where}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(
            f"{where}: {name} must be a floating-point tensor, got dtype {t.dtype} "
            f"(convert it first, e.g. {name}.float())"
        )


def check_same(name: str, t: Tensor, ref_name: str, ref: Tensor, where: str) -> None:
    """Raise unless ``t`` has the dtype and device of ``ref``."""
    if t.dtype != ref.dtype:
        raise TypeError(
            f"{where}: {name} has dtype {t.dtype} but {ref_name} has dtype {ref.dtype}; "
            f"convert one of them, e.g. {name}.to({ref_name}.dtype)"
        )
    if t.device != ref.device:
        raise ValueError(
            f"{where}: {name} is on device {t.device} but {ref_name} is on {ref.device}; "
            f"move them to the same device, e.g. {name}.to({ref_name}.device)"
        )


def check_linear_args(input, weight, bias=None, where: str = "Linear_Layer") -> None:
    """Validate the arguments of ``input @ weight + bias`` (weight shaped ``(in, out)``)."""
    # Fast path, paid on every call: one expression over the properties that matter. Only when it
    # fails do the detailed checks below run to say what is wrong.
    try:
        dtype, device = weight.dtype, weight.device
        if (
            weight.is_floating_point()
            and input.dtype == dtype
            and weight.dim() == 2
            and input.shape[-1] == weight.shape[0]
            and input.device == device
            and (bias is None or (
                bias.dtype == dtype and bias.dim() == 1 and bias.shape[0] == weight.shape[1]
                and bias.device == device))
        ):
            return
    except (AttributeError, IndexError, TypeError):
        pass  # not tensors, or a 0-D input: diagnosed below
    check_floating("input", input, where)
    check_floating("weight", weight, where)
    if weight.dim() != 2:
        raise ValueError(
            f"{where}: weight must be 2-D with shape (in_features, out_features), "
            f"got shape {_shape(weight)}"
        )
    in_features, out_features = weight.shape
    if input.dim() == 0:
        raise ValueError(f"{where}: input must have shape (*, {in_features}), got a 0-D tensor")
    if input.shape[-1] != in_features:
        raise ValueError(
            f"{where}: input has {input.shape[-1]} features (input shape {_shape(input)}), "
            f"but weight expects {in_features} (weight shape {_shape(weight)} is "
            f"(in_features, out_features)); the input's last dimension must be {in_features}"
        )
    check_same("input", input, "weight", weight, where)
    if bias is not None:
        check_floating("bias", bias, where)
        if bias.dim() != 1 or bias.shape[0] != out_features:
            raise ValueError(
                f"{where}: bias must have shape ({out_features},), one value per output "
                f"feature, got shape {_shape(bias)}"
            )
        check_same("bias", bias, "weight", weight, where)


# ---------------------------------------------------------------------------------------------
# The Linear layer: y = x W + b, with W shaped (in_features, out_features) as in the lessons.
# ---------------------------------------------------------------------------------------------


def linear_forward(input: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``y = x W + b`` for ``x`` of shape ``(*, in)``, ``W`` of shape ``(in, out)``, ``b`` of ``(out,)``."""
    if input.dim() == 2:
        if bias is None:
            return input.mm(weight)  # (B, in) @ (in, out) -> (B, out)
        # One fused call computes b + x @ W: no expanded bias, no second pass over the output.
        return torch.addmm(bias, input, weight)
    output = input.matmul(weight)  # (*, in) @ (in, out) -> (*, out)
    if bias is not None:
        output += bias  # broadcast over every leading dimension
    return output


def linear_backward(grad_output, input, weight, needs_input, needs_weight, needs_bias,
                    weight_column_major=False):
    """Gradients of ``y = x W + b`` given ``grad_output = dL/dy``, only those asked for.

    Returns ``(grad_input, grad_weight, grad_bias)`` with ``None`` for each one not needed:
        grad_input  = dL/dy @ W^T         (*, out) @ (out, in) -> (*, in)
        grad_weight = x^T @ dL/dy          (in, N) @ (N, out)   -> (in, out), W's own layout
        grad_bias   = sum of dL/dy over every row                -> (out,)
    where N is the number of rows once the leading dimensions are flattened.
    ``weight_column_major`` asks for ``grad_weight`` in the memory order ``Linear`` stores its
    weight in (see ``is_column_major``); ``weight`` itself may be ``None`` when ``needs_input`` is
    false, and ``input`` when ``needs_weight`` is false.
    """
    grad_input = grad_weight = grad_bias = None
    if needs_input:
        grad_input = grad_output.matmul(weight.t())
    if needs_weight or needs_bias:
        flat = grad_output.dim() != 2  # (*, out) -> (N, out); a 2-D gradient is used as it is
        grad_2d = grad_output.reshape(-1, grad_output.shape[-1]) if flat else grad_output
        if needs_weight:
            input_2d = input.reshape(-1, input.shape[-1]) if flat else input  # (*, in) -> (N, in)
            if weight_column_major:
                # (x^T g) = (g^T x)^T: the same numbers, written in the weight's memory order,
                # so autograd can accumulate them without a copy.
                grad_weight = grad_2d.t().mm(input_2d).t()
            else:
                grad_weight = input_2d.t().mm(grad_2d)
        if needs_bias:
            grad_bias = grad_2d.sum(0)
    return grad_input, grad_weight, grad_bias


def is_column_major(weight: Tensor) -> bool:
    """True when ``weight`` (in, out) is stored as nn.Linear stores its (out, in) weight."""
    return weight.stride(0) == 1 and weight.stride(1) != 1


class Linear_Layer(torch.autograd.Function):
    """``y = x W + b``; ``dL/dx = dL/dy W^T``, ``dL/dW = x^T dL/dy``, ``dL/db = sum_rows dL/dy``.

    ``Linear_Layer.apply(input, weight, bias=None)`` with input ``(*, in_features)``, weight
    ``(in_features, out_features)`` and an optional bias ``(out_features,)``.
    """

    @staticmethod
    def forward(ctx, input, weight, bias=None):
        check_linear_args(input, weight, bias)
        needs = ctx.needs_input_grad
        # Save only what backward will use: dL/dx needs W, dL/dW needs x, dL/db needs neither.
        ctx.save_for_backward(input if needs[1] else None, weight if needs[0] else None)
        ctx.weight_column_major = is_column_major(weight)
        return linear_forward(input, weight, bias)

    @staticmethod
    def backward(ctx, grad_output):
        input, weight = ctx.saved_tensors
        needs = ctx.needs_input_grad
        needs_bias = len(needs) > 2 and needs[2]  # apply(input, weight) gives only two flags
        return linear_backward(grad_output, input, weight, needs[0], needs[1], needs_bias,
                               ctx.weight_column_major)


# ---------------------------------------------------------------------------------------------
# The gallery: element-wise Functions, each with its derivative.
# ---------------------------------------------------------------------------------------------


class Square(torch.autograd.Function):
    """``y = x^2``; ``dy/dx = 2x``."""

    @staticmethod
    def forward(ctx, x):
        check_floating("x", x, "Square")
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return grad_output * 2 * x


class Cube(torch.autograd.Function):
    """``y = x^3``; ``dy/dx = 3x^2``."""

    @staticmethod
    def forward(ctx, x):
        check_floating("x", x, "Cube")
        ctx.save_for_backward(x)
        return x * x * x

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return grad_output * 3 * x * x


class Exp(torch.autograd.Function):
    """``y = e^x``; ``dy/dx = e^x = y`` (so backward reuses the output)."""

    @staticmethod
    def forward(ctx, x):
        check_floating("x", x, "Exp")
        y = torch.exp(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad_output):
        (y,) = ctx.saved_tensors
        return grad_output * y


class ReLU(torch.autograd.Function):
    """``y = max(0, x)``; ``dy/dx = 1`` where ``x > 0``, else ``0``."""

    @staticmethod
    def forward(ctx, x):
        check_floating("x", x, "ReLU")
        y = torch.relu(x)
        ctx.save_for_backward(y)  # y > 0 exactly where x > 0
        return y

    @staticmethod
    def backward(ctx, grad_output):
        (y,) = ctx.saved_tensors
        return grad_output * (y > 0).to(grad_output.dtype)


class Sigmoid(torch.autograd.Function):
    """``y = 1 / (1 + e^-x)``; ``dy/dx = y (1 - y)``."""

    @staticmethod
    def forward(ctx, x):
        check_floating("x", x, "Sigmoid")
        y = torch.sigmoid(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad_output):
        (y,) = ctx.saved_tensors
        return grad_output * y * (1 - y)


class Tanh(torch.autograd.Function):
    """``y = tanh(x)``; ``dy/dx = 1 - y^2``."""

    @staticmethod
    def forward(ctx, x):
        check_floating("x", x, "Tanh")
        y = torch.tanh(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad_output):
        (y,) = ctx.saved_tensors
        return grad_output * (1 - y * y)


class LearnedSiLU(torch.autograd.Function):
    """``y = a x sigmoid(x)``; ``dy/dx = a (s + x s (1 - s))`` with ``s = sigmoid(x)``, ``dy/da = x s``.

    ``LearnedSiLU.apply(x, slope)``: ``slope`` is a tensor that broadcasts against ``x`` (a scalar,
    or one slope per feature); its gradient is summed back to ``slope``'s own shape.
    """

    @staticmethod
    def forward(ctx, x, slope):
        check_floating("x", x, "LearnedSiLU")
        check_floating("slope", slope, "LearnedSiLU")
        check_same("slope", slope, "x", x, "LearnedSiLU")
        try:
            shape = torch.broadcast_shapes(x.shape, slope.shape)
        except RuntimeError:
            shape = None
        if shape != x.shape:
            raise ValueError(
                f"LearnedSiLU: slope of shape {_shape(slope)} does not broadcast to x of shape "
                f"{_shape(x)}; use a scalar slope or one per feature (shape ({x.shape[-1]},))"
            )
        ctx.save_for_backward(x, slope)
        return slope * x * torch.sigmoid(x)

    @staticmethod
    def backward(ctx, grad_output):
        x, slope = ctx.saved_tensors
        s = torch.sigmoid(x)
        grad_x = grad_slope = None
        if ctx.needs_input_grad[0]:
            # product rule on x * s(x): d/dx = s + x s'(x), with s' = s (1 - s)
            grad_x = grad_output * slope * (s + x * s * (1 - s))
        if ctx.needs_input_grad[1]:
            grad_slope = (grad_output * x * s).sum_to_size(slope.shape)
        return grad_x, grad_slope
