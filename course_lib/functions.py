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

``Linear_Layer`` here is the reference a student reads: the three formulas and nothing else.
``course_lib.fast.FastLinear`` computes the same numbers with the production concerns added.
"""

import math

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
    """Raise a clear error unless ``input @ weight + bias`` is well formed.

    ``input`` ``(*, n_in)``, ``weight`` ``(n_in, n_out)`` and ``bias`` ``(n_out,)`` or ``None``:
    floating point, one dtype, one device. ``where`` names the caller in the message.
    """
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
# The Linear layer: Y = X W + b, with W shaped (n_in, n_out) as in the lessons.
# This is the reference version a student reads. course_lib.fast.FastLinear computes the same
# numbers with the production concerns added (autocast, memory order, a fused addmm, a cheap
# validation path); course_lib.layers.Linear uses that one.
# ---------------------------------------------------------------------------------------------


def rows(t: Tensor) -> Tensor:
    """``(*, n) -> (N, n)``: every leading dimension folded into one of ``N`` rows.

    ``N`` is the product of the leading sizes (1 for a 1-D ``t``, 0 if one of them is 0).
    ``reshape`` with explicit sizes, not ``flatten`` or ``-1``: it folds zero-size tensors too,
    and batched-gradient checks (``check_batched_grad``) can batch it.
    """
    return t.reshape(math.prod(t.shape[:-1]), t.shape[-1])


def linear_forward(input: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``Y = X W + b`` for ``X`` ``(*, n_in)``, ``W`` ``(n_in, n_out)``, ``b`` ``(n_out,)`` or None."""
    output = input @ weight  # (*, n_in) @ (n_in, n_out) -> (*, n_out)
    if bias is not None:
        output = output + bias  # (n_out,) broadcast over every leading dimension
    return output


def linear_backward(grad_output: Tensor, input: Tensor, weight: Tensor, needs=(True, True, True)):
    """The three gradients of ``Y = X W + b`` given ``G = dL/dY``, only those asked for.

    ``needs`` says which of ``(input, weight, bias)`` need a gradient (a backward passes its
    ``ctx.needs_input_grad``; two flags mean there is no bias). Returns
    ``(grad_input, grad_weight, grad_bias)`` with ``None`` for each one not needed::

        grad_input  = G @ W.T         (*, n_out) @ (n_out, n_in) -> (*, n_in)
        grad_weight = X.T @ G         (n_in, N) @ (N, n_out)     -> (n_in, n_out)
        grad_bias   = G.sum(0)        summed over all N rows     -> (n_out,)

    with every leading dimension of ``X`` and ``G`` folded into ``N`` rows (``rows``).
    ``weight`` may be ``None`` when the input needs no gradient, ``input`` when the weight needs none.
    """
    needs_input, needs_weight, needs_bias = (*needs, False)[:3]
    grad_input = grad_weight = grad_bias = None
    if needs_input:
        grad_input = grad_output @ weight.T
    if needs_weight:
        grad_weight = rows(input).T @ rows(grad_output)
    if needs_bias:
        grad_bias = rows(grad_output).sum(0)
    return grad_input, grad_weight, grad_bias


class Linear_Layer(torch.autograd.Function):
    """``Y = X W + b``; ``dL/dX = G W^T``, ``dL/dW = X^T G``, ``dL/db = sum_rows G`` (``G = dL/dY``).

    ``Linear_Layer.apply(input, weight, bias=None)`` with input ``(*, n_in)``, weight
    ``(n_in, n_out)`` and an optional bias ``(n_out,)``. For training under ``torch.autocast``
    use ``course_lib.fast.FastLinear`` (what ``course_lib.layers.Linear`` runs): same numbers,
    production concerns added.
    """

    generate_vmap_rule = True  # forward and backward are plain torch ops: vmap can batch them

    @staticmethod
    def forward(input, weight, bias=None):
        check_linear_args(input, weight, bias)  # a clear error before any matmul
        return linear_forward(input, weight, bias)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, weight = inputs[:2]
        needs = ctx.needs_input_grad  # one flag per argument of apply: (input, weight[, bias])
        # Save only what backward will use: dL/dX needs W, dL/dW needs X, dL/db needs neither.
        ctx.save_for_backward(input if needs[1] else None, weight if needs[0] else None)

    @staticmethod
    def backward(ctx, grad_output):
        input, weight = ctx.saved_tensors
        return linear_backward(grad_output, input, weight, ctx.needs_input_grad)


# Names that moved to course_lib.fast with the production concerns, importable here as before.
_MOVED_TO_FAST = {"autocast_args", "is_column_major", "_addmm", "_weight_grad", "_linear_args_ok"}
_rows = rows  # its name before it became public


def __getattr__(name):
    if name in _MOVED_TO_FAST:
        from . import fast  # fast imports this module: import it only when asked

        return getattr(fast, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
            per_feature = f" or one per feature (shape ({x.shape[-1]},))" if x.dim() else ""
            raise ValueError(
                f"LearnedSiLU: slope of shape {_shape(slope)} does not broadcast to x of shape "
                f"{_shape(x)}; use a scalar slope (shape ()){per_feature}"
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
