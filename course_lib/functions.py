"""Autograd Functions written by hand: the Linear layer and a gallery of element-wise ops.

Every class here is a ``torch.autograd.Function`` in today's style:

* ``forward(*inputs)`` computes the value and nothing else (no ``ctx``);
* ``setup_context(ctx, inputs, output)`` saves what backward will need;
* ``backward(ctx, grad_output)`` applies the chain rule,
  ``grad_input = grad_output * (d output / d input)``.

Keeping the computation apart from the bookkeeping is what lets ``torch.func`` transforms
(``vmap``, ``grad``, ``jacrev``) and ``torch.compile`` run a Function: with ``generate_vmap_rule``
PyTorch batches ``forward`` and ``backward`` by itself. Backward passes are written with ordinary
(differentiable) torch ops, so double backward works too (``torch.autograd.gradgradcheck``); that
is why none of them is ``once_differentiable``, and no output needs ``mark_non_differentiable``
(every output is a float that depends smoothly, almost everywhere, on the inputs).
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
    """Validate the arguments of ``input @ weight + bias`` (weight shaped ``(n_in, n_out)``)."""
    if _linear_args_ok(input, weight, bias):  # the common case, in one expression (see below)
        return
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


def autocast_args(input, weight, bias=None):
    """The arguments as ``F.linear`` sees them under ``torch.autocast``: cast to its dtype.

    Inside ``torch.autocast(device_type)`` a matmul runs in the autocast dtype (bfloat16 on the
    CPU, float16 by default on CUDA): float32 and other low-precision tensors are cast to it;
    float64 tensors are left alone, as autocast leaves them. Outside autocast nothing changes.
    """
    if not isinstance(weight, Tensor):
        return input, weight, bias
    device_type = weight.device.type
    if not (torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type)):
        return input, weight, bias
    dtype = torch.get_autocast_dtype(device_type)

    def cast(t):
        eligible = isinstance(t, Tensor) and t.is_floating_point() and t.dtype != torch.float64
        return t.to(dtype) if eligible else t

    return cast(input), cast(weight), cast(bias)


# ---------------------------------------------------------------------------------------------
# The Linear layer: y = x W + b, with W shaped (n_in, n_out) as in the lessons.
# ---------------------------------------------------------------------------------------------


def _rows(t: Tensor) -> Tensor:
    """``(*, n) -> (N, n)``: every leading dimension folded into rows (zero-size ones too)."""
    return t.unsqueeze(0) if t.dim() == 1 else t.flatten(0, -2)


def linear_forward(input: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``y = x W + b`` for ``x`` ``(*, n_in)``, ``W`` ``(n_in, n_out)`` and ``b`` ``(n_out,)``."""
    if input.dim() >= 2 and bias is not None:
        return _addmm(bias, input, weight)  # performance detail, see the end of this section
    output = input.matmul(weight)  # (*, n_in) @ (n_in, n_out) -> (*, n_out)
    if bias is not None:
        output = output + bias  # broadcast over every leading dimension
    return output


def linear_backward(grad_output, input, weight, needs=(True, True, True),
                    weight_column_major=False):
    """Gradients of ``y = x W + b`` given ``grad_output = dL/dy``, only those asked for.

    ``needs`` says which of ``(input, weight, bias)`` need a gradient: a backward passes its
    ``ctx.needs_input_grad`` (three flags from ``Linear_Layer.apply``, which fills in
    ``bias=None``; two from the custom op ``course_lib.linear`` called without a bias).
    Returns ``(grad_input, grad_weight, grad_bias)`` with ``None`` for each one not needed::

        grad_input  = dL/dy @ W^T    (*, n_out) @ (n_out, n_in) -> (*, n_in)
        grad_weight = x^T @ dL/dy    (n_in, N) @ (N, n_out)     -> (n_in, n_out)
        grad_bias   = sum of dL/dy over every row              -> (n_out,)

    where N is the number of rows once the leading dimensions are folded (``_rows``).
    ``weight`` may be ``None`` when the input needs no gradient, and ``input`` when the weight
    needs none. ``weight_column_major`` is a performance detail (see the end of this section).
    """
    needs_input, needs_weight, needs_bias = (*needs, False)[:3]
    grad_input = grad_weight = grad_bias = None
    if needs_input:
        grad_input = grad_output.matmul(weight.t())
    if needs_weight:
        grad_weight = _weight_grad(_rows(input), _rows(grad_output), weight_column_major)
    if needs_bias:
        grad_bias = _rows(grad_output).sum(0)
    return grad_input, grad_weight, grad_bias


class Linear_Layer(torch.autograd.Function):
    """``y = x W + b``; ``dL/dx = dL/dy W^T``, ``dL/dW = x^T dL/dy``, ``dL/db = sum_rows dL/dy``.

    ``Linear_Layer.apply(input, weight, bias=None)`` with input ``(*, n_in)``, weight
    ``(n_in, n_out)`` and an optional bias ``(n_out,)``. Under
    ``torch.autocast`` it computes in the autocast dtype as ``F.linear`` does, and the gradients
    come back in each input's own dtype (float32 parameters get float32 gradients).
    """

    generate_vmap_rule = True  # forward and backward are plain torch ops: vmap can batch them

    @staticmethod
    def forward(input, weight, bias=None):
        input, weight, bias = autocast_args(input, weight, bias)
        check_linear_args(input, weight, bias)
        return linear_forward(input, weight, bias)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, weight, bias = (*inputs, None)[:3]  # apply(input, weight) passes no bias
        needs = ctx.needs_input_grad
        # Save only what backward will use: dL/dx needs W, dL/dW needs x, dL/db needs neither.
        ctx.save_for_backward(input if needs[1] else None, weight if needs[0] else None)
        ctx.dtypes = (input.dtype, weight.dtype, None if bias is None else bias.dtype)
        ctx.weight_column_major = is_column_major(weight)

    @staticmethod
    def backward(ctx, grad_output):
        input, weight = ctx.saved_tensors
        low = grad_output.dtype
        autocast = any(dtype not in (None, low) for dtype in ctx.dtypes)
        if autocast:  # forward computed in grad_output's lower dtype: backward does too
            input = None if input is None else input.to(low)
            weight = None if weight is None else weight.to(low)
        grads = linear_backward(grad_output, input, weight, ctx.needs_input_grad,
                                ctx.weight_column_major)
        if autocast:  # each gradient in its input's own dtype: float32 for float32 parameters
            grads = tuple(None if g is None else g.to(d) for g, d in zip(grads, ctx.dtypes))
        return grads


# ----- Performance detail (read the plain version above first) -------------------------------
# 1. check_linear_args runs on every call: its common case is one boolean expression.
# 2. An input with rows and a bias uses one fused addmm: no second pass over the output for + b,
#    and one rounding instead of two in a low-precision dtype (as F.linear does).
# 3. course_lib.layers.Linear stores its (n_in, n_out) weight column by column, as nn.Linear
#    stores its (n_out, n_in) weight, so x @ W runs the same BLAS calls as F.linear. grad_weight
#    is then written in that same memory order, so autograd accumulates it into .grad without
#    a copy.


def _linear_args_ok(input, weight, bias) -> bool:
    try:
        dtype, device = weight.dtype, weight.device
        return bool(
            weight.is_floating_point() and input.dtype == dtype and weight.dim() == 2
            and input.dim() > 0 and input.shape[-1] == weight.shape[0] and input.device == device
            and (bias is None or (
                bias.dtype == dtype and bias.dim() == 1 and bias.shape[0] == weight.shape[1]
                and bias.device == device))
        )
    except (AttributeError, IndexError, TypeError):
        return False  # not tensors: diagnosed by the detailed checks


def _addmm(bias: Tensor, input: Tensor, weight: Tensor) -> Tensor:
    if input.dim() == 2:
        return torch.addmm(bias, input, weight)  # b + (B, n_in) @ (n_in, n_out) -> (B, n_out)
    output = torch.addmm(bias, _rows(input), weight)  # (*, n_in) -> (N, n_in) -> (N, n_out)
    return output.view(*input.shape[:-1], weight.shape[1])  # -> (*, out)


def is_column_major(weight: Tensor) -> bool:
    """True when ``weight`` (n_in, n_out) is stored as nn.Linear stores its (n_out, n_in) weight."""
    return weight.dim() == 2 and weight.stride(0) == 1 and weight.stride(1) != 1


def _weight_grad(input_2d: Tensor, grad_2d: Tensor, column_major: bool) -> Tensor:
    """``x^T @ dL/dy`` -> (n_in, n_out), in the weight's memory order."""
    if column_major:
        # (x^T g) = (g^T x)^T: the same numbers, written column by column.
        return grad_2d.t().mm(input_2d).t()
    return input_2d.t().mm(grad_2d)


# ---------------------------------------------------------------------------------------------
# The gallery: element-wise Functions, each with its derivative. Each saves the one tensor its
# derivative needs: the input (Square, Cube) or, cheaper to reuse, the output (Exp, ReLU, ...).
# ---------------------------------------------------------------------------------------------


class Square(torch.autograd.Function):
    """``y = x^2``; ``dy/dx = 2x``."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x):
        check_floating("x", x, "Square")
        return x * x

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return grad_output * (2 * x)


class Cube(torch.autograd.Function):
    """``y = x^3``; ``dy/dx = 3x^2``."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x):
        check_floating("x", x, "Cube")
        return x.pow(3)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return grad_output * (3 * x * x)


class Exp(torch.autograd.Function):
    """``y = e^x``; ``dy/dx = e^x = y`` (so backward reuses the output)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x):
        check_floating("x", x, "Exp")
        return torch.exp(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(output)

    @staticmethod
    def backward(ctx, grad_output):
        (y,) = ctx.saved_tensors
        return grad_output * y


class ReLU(torch.autograd.Function):
    """``y = max(0, x)``; ``dy/dx = 0`` where ``x <= 0``, else ``1`` (a NaN input passes the gradient)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x):
        check_floating("x", x, "ReLU")
        return torch.relu(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(output)  # y <= 0 exactly where x <= 0; y is NaN where x is

    @staticmethod
    def backward(ctx, grad_output):
        (y,) = ctx.saved_tensors
        # Zero the gradient where y <= 0 rather than multiply by a 0/1 mask: a NaN or infinite
        # incoming gradient must give 0 there, not NaN, and NaN > 0 is False, so a NaN input
        # passes its gradient through -- exactly as torch.relu's backward does.
        return grad_output.masked_fill(y <= 0, 0)


class Sigmoid(torch.autograd.Function):
    """``y = 1 / (1 + e^-x)``; ``dy/dx = y (1 - y)``."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x):
        check_floating("x", x, "Sigmoid")
        return torch.sigmoid(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(output)

    @staticmethod
    def backward(ctx, grad_output):
        (y,) = ctx.saved_tensors
        return grad_output * (1 - y) * y


class Tanh(torch.autograd.Function):
    """``y = tanh(x)``; ``dy/dx = 1 - y^2``."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x):
        check_floating("x", x, "Tanh")
        return torch.tanh(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(output)

    @staticmethod
    def backward(ctx, grad_output):
        (y,) = ctx.saved_tensors
        return grad_output * (1 - y * y)


class LearnedSiLU(torch.autograd.Function):
    """``y = a x sigmoid(x)``; ``dy/dx = a (s + x s (1 - s))`` with ``s = sigmoid(x)``, ``dy/da = x s``.

    ``LearnedSiLU.apply(x, slope)``: ``slope`` is a tensor that broadcasts against ``x`` (a scalar,
    or one slope per feature); its gradient is summed back to ``slope``'s own shape.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x, slope):
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
        return slope * (x * torch.sigmoid(x))

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)  # x and slope

    @staticmethod
    def backward(ctx, grad_output):
        x, slope = ctx.saved_tensors
        s = torch.sigmoid(x)
        grad_x = grad_slope = None
        if ctx.needs_input_grad[0]:
            # product rule on x * s(x): d/dx = s + x s'(x), with s' = s (1 - s)
            grad_x = grad_output * slope * (s * (1 + x * (1 - s)))
        if ctx.needs_input_grad[1]:
            grad_slope = (grad_output * (x * s)).sum_to_size(slope.shape)
        return grad_x, grad_slope
