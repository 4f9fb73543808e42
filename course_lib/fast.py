"""The production Linear Function: ``functions.Linear_Layer`` plus what a training layer needs.

``FastLinear`` computes the same numbers as the reference ``Linear_Layer`` (tests/test_fast.py
checks values and gradients against it) and adds, each in one marked place:

1. **autocast**: under ``torch.autocast`` it computes in the autocast dtype, as ``F.linear`` does,
   and returns each gradient in its input's own dtype (float32 parameters get float32 gradients);
2. **memory order**: ``layers.Linear`` stores its ``(n_in, n_out)`` weight column by column, as
   ``nn.Linear`` stores its ``(n_out, n_in)`` weight, so ``X @ W`` runs the BLAS calls of
   ``F.linear``; ``grad_weight`` is written in that same order, so autograd accumulates it into
   ``.grad`` without a copy;
3. **one fused call**: with rows and a bias, ``torch.addmm`` computes ``b + X W`` in one pass
   (and one rounding in a low-precision dtype, as ``F.linear``);
4. **cheap validation**: ``FastLinear`` checks the common case in one expression; ``linear``'s
   inline path (5.) leaves shapes, dtypes and devices to aten, whose ``addmm`` refuses them, and
   checks first only what aten would accept; either way ``functions.check_linear_args``'s
   detailed checks run only when something is wrong, to say what;
5. **no per-call signature binding**: ``linear`` (what ``layers.Linear`` calls) runs an equivalent
   Function written in the older ``forward(ctx, ...)`` style when no ``torch.func`` transform is
   active. A Function with ``setup_context`` has ``apply`` bind its arguments to ``forward``'s
   signature (``inspect.signature``) on every call, a cost larger than the rest of the layer's
   Python; under ``vmap``/``grad`` (which need ``setup_context``) ``FastLinear`` itself runs.

The custom op ``torch.ops.course_lib.linear`` (``ops.py``) uses the same forward and backward.
"""

import torch
from torch import Tensor

from .functions import check_linear_args, rows

_transforms_active = torch._C._are_functorch_transforms_active  # a C function: no Python frame
_autocast_on = torch._C._is_any_autocast_enabled

# The per-call budget, counted rather than timed (tests/test_dispatch_budget.py holds ``linear``
# to it; benchmarks/linear_vs_torch.py prints it): one forward + backward of ``linear`` against one
# of ``F.linear`` with the same numbers dispatches no more aten operators, enters at most
# BUDGET_OWN_CALLS functions of course_lib, and at most BUDGET_EXTRA_CALLS Python functions more
# in all (PyTorch's own Python for an autograd.Function included).
BUDGET_EXTRA_ATEN_OPS = 0
BUDGET_OWN_CALLS = 3
BUDGET_EXTRA_CALLS = 6

# ----- 4. cheap validation --------------------------------------------------------------------


def _linear_args_ok(input, weight, bias) -> bool:
    """Everything ``check_linear_args`` checks, as one expression (False on any surprise)."""
    try:
        dtype, device = weight.dtype, weight.device
        return (weight.is_floating_point() and input.dtype == dtype and weight.dim() == 2
                and input.dim() > 0 and input.shape[-1] == weight.shape[0]
                and input.device == device
                and (bias is None or (
                    bias.dtype == dtype and bias.dim() == 1 and bias.shape[0] == weight.shape[1]
                    and bias.device == device)))
    except (AttributeError, IndexError, TypeError):
        return False  # not tensors: diagnosed by the detailed checks


def check_args(input, weight, bias=None, where: str = "FastLinear") -> None:
    """``check_linear_args`` with the common case first: the same errors, one expression if fine."""
    if not _linear_args_ok(input, weight, bias):
        check_linear_args(input, weight, bias, where)


# ----- 1. autocast ----------------------------------------------------------------------------


def autocast_args(input, weight, bias=None):
    """The arguments as ``F.linear`` sees them under ``torch.autocast``: cast to its dtype.

    Inside ``torch.autocast(device_type)`` a matmul runs in the autocast dtype (bfloat16 on the
    CPU, float16 by default on CUDA): float32 and other low-precision tensors are cast to it;
    float64 tensors are left alone, as autocast leaves them. Outside autocast nothing changes.
    """
    if not (_autocast_on() and isinstance(weight, Tensor)):
        return input, weight, bias
    device_type = weight.device.type
    if not (torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type)):
        return input, weight, bias
    dtype = torch.get_autocast_dtype(device_type)

    def cast(t):
        eligible = isinstance(t, Tensor) and t.is_floating_point() and t.dtype != torch.float64
        return t.to(dtype) if eligible else t

    return cast(input), cast(weight), cast(bias)


# ----- 2. memory order and 3. one fused call --------------------------------------------------


def is_column_major(weight: Tensor) -> bool:
    """True when ``weight`` (n_in, n_out) is stored as nn.Linear stores its (n_out, n_in) weight."""
    return weight.dim() == 2 and weight.stride(0) == 1 and weight.stride(1) != 1


def _addmm(bias: Tensor, input: Tensor, weight: Tensor) -> Tensor:
    if input.dim() == 2:
        return torch.addmm(bias, input, weight)  # b + (B, n_in) @ (n_in, n_out) -> (B, n_out)
    output = torch.addmm(bias, rows(input), weight)  # (*, n_in) -> (N, n_in) -> (N, n_out)
    return output.view(*input.shape[:-1], weight.shape[1])  # -> (*, n_out)


def _weight_grad(input_2d: Tensor, grad_2d: Tensor, column_major: bool) -> Tensor:
    """``X^T @ G`` -> (n_in, n_out), in the weight's memory order."""
    if column_major:
        return grad_2d.T.mm(input_2d).T  # (X^T G) = (G^T X)^T: the same numbers, column by column
    return input_2d.T.mm(grad_2d)


def linear_forward(input: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``functions.linear_forward`` with one fused ``addmm`` when the input has rows and a bias."""
    if bias is not None and input.dim() >= 2:
        return _addmm(bias, input, weight)
    output = input.matmul(weight)  # (*, n_in) @ (n_in, n_out) -> (*, n_out)
    return output if bias is None else output + bias


def linear_backward(grad_output, input, weight, needs=(True, True, True), weight_column_major=False):
    """``functions.linear_backward``, with ``grad_weight`` in the weight's memory order."""
    needs_input, needs_weight, needs_bias = (*needs, False)[:3]
    grad_input = grad_weight = grad_bias = None
    if needs_input:
        grad_input = grad_output.matmul(weight.T)  # (*, n_out) @ (n_out, n_in) -> (*, n_in)
    if needs_weight or needs_bias:
        grad_2d = grad_output if grad_output.dim() == 2 else rows(grad_output)  # (N, n_out)
        if needs_weight:
            input_2d = input if input.dim() == 2 else rows(input)  # (N, n_in)
            grad_weight = _weight_grad(input_2d, grad_2d, weight_column_major)
        if needs_bias:
            grad_bias = grad_2d.sum(0)
    return grad_input, grad_weight, grad_bias


# ----- The Function ---------------------------------------------------------------------------


class FastLinear(torch.autograd.Function):
    """``Y = X W + b`` as ``functions.Linear_Layer``, with the production concerns listed above.

    ``FastLinear.apply(input, weight, bias=None)``: input ``(*, n_in)``, weight ``(n_in, n_out)``,
    bias ``(n_out,)`` or None. Prefer ``fast.linear(input, weight, bias)``: the same Function
    without the per-call cost of ``apply``'s signature binding (5. above).
    """

    generate_vmap_rule = True  # forward and backward are plain torch ops: vmap can batch them

    @staticmethod
    def forward(input, weight, bias=None):
        input, weight, bias = autocast_args(input, weight, bias)  # 1.
        check_args(input, weight, bias)  # 4.
        return linear_forward(input, weight, bias)  # 3.

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, weight, bias = (*inputs, None)[:3]  # apply(input, weight) passes no bias
        needs = ctx.needs_input_grad
        ctx.save_for_backward(input if needs[1] else None, weight if needs[0] else None)
        low = output.dtype  # 1. differs from an input's dtype only under autocast
        bias_dtype = None if bias is None else bias.dtype
        autocast = input.dtype != low or weight.dtype != low or bias_dtype not in (None, low)
        ctx.dtypes = (input.dtype, weight.dtype, bias_dtype) if autocast else None
        ctx.weight_column_major = is_column_major(weight)  # 2.

    @staticmethod
    def backward(ctx, grad_output):
        input, weight = ctx.saved_tensors
        dtypes = ctx.dtypes
        if dtypes is not None:  # 1. forward computed in grad_output's lower dtype: backward too
            low = grad_output.dtype
            input = None if input is None else input.to(low)
            weight = None if weight is None else weight.to(low)
        grads = linear_backward(grad_output, input, weight, ctx.needs_input_grad,
                                ctx.weight_column_major)
        if dtypes is not None:  # 1. each gradient in its input's own dtype
            grads = tuple(None if g is None else g.to(d) for g, d in zip(grads, dtypes))
        return grads


class _EagerLinear(torch.autograd.Function):
    """``FastLinear`` in the ``forward(ctx, ...)`` style: no signature binding (5.), no transforms.

    The common case (no autocast, a 2-D input) runs inline, one Python frame per pass: the same
    aten calls as ``FastLinear``'s helpers, without their calls (tests/test_fast.py checks both
    give the same numbers bit for bit). Its checks cost nothing when the arguments are right:
    ``mm``/``addmm`` refuse mismatched shapes, dtypes and devices themselves, and only then do
    ``check_linear_args``'s detailed checks run, to say what is wrong in the course's words; what
    aten would accept but the layer must not (integer tensors, a bias that only broadcasts, a meta
    tensor beside a real one) is checked first. Every other case (autocast, more leading dimensions) goes through
    ``FastLinear``'s code.
    """

    @staticmethod
    def forward(ctx, input, weight, bias):
        try:  # the common case; aten's own checks catch wrong shapes, dtypes and devices for free
            if (_autocast_on() or input.dim() != 2 or not weight.is_floating_point()
                    or input.is_meta or weight.is_meta  # meta kernels do not check devices
                    or not (bias is None or (bias.dim() == 1 and bias.shape[0] == weight.shape[1]
                                             and not bias.is_meta))):
                output = None  # autocast, more leading dimensions, or an argument the checks name
            elif bias is None:
                output = input.mm(weight)  # (B, n_in) @ (n_in, n_out) -> (B, n_out)
            else:
                output = torch.addmm(bias, input, weight)  # 3. b + (B, n_in) @ (n_in, n_out)
        except Exception as e:  # noqa: BLE001 (not tensors, or aten refused them)
            refused = e
        else:
            refused = None
        if refused is not None:  # say what is wrong (outside the except: no chained traceback)
            check_args(input, weight, bias, "FastLinear")
            raise refused  # the arguments are fine: aten's own error (out of memory, ...)
        if output is None:
            output = FastLinear.forward(input, weight, bias)
            FastLinear.setup_context(ctx, (input, weight, bias), output)
            return output
        needs = ctx.needs_input_grad
        ctx.save_for_backward(input if needs[1] else None, weight if needs[0] else None)
        ctx.dtypes = None  # no autocast (1.)
        ctx.weight_column_major = weight.stride(0) == 1 and weight.stride(1) != 1  # 2.
        return output

    @staticmethod
    def backward(ctx, grad_output):
        if ctx.dtypes is not None or grad_output.dim() != 2:
            return FastLinear.backward(ctx, grad_output)
        input, weight = ctx.saved_tensors
        needs_input, needs_weight, needs_bias = ctx.needs_input_grad
        grad_input = grad_output.mm(weight.T) if needs_input else None  # (B, n_out) @ (n_out, n_in)
        grad_weight = None
        if needs_weight:  # X^T G (n_in, n_out), in the weight's memory order (2.)
            grad_weight = (grad_output.T.mm(input).T if ctx.weight_column_major
                           else input.T.mm(grad_output))
        return grad_input, grad_weight, grad_output.sum(0) if needs_bias else None


def linear(input: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``Y = X W + b`` by ``FastLinear``, at the lowest cost per call (5.)."""
    if _transforms_active():
        return FastLinear.apply(input, weight, bias)
    return _EagerLinear.apply(input, weight, bias)
