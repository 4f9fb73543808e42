"""The Linear layer as a PyTorch operator: ``torch.ops.course_lib.linear(input, weight, bias)``.

``Linear_Layer`` (an autograd Function) is Python that ``torch.compile`` has to trace through. A
custom op registered with ``torch.library`` is, to PyTorch, an operator like ``aten::addmm``:
compiled graphs call it as one opaque node, and it works with every part of PyTorch that asks an
operator three questions, each answered here once:

* what does it compute?         the implementation (the same ``linear_forward`` as the Function)
* what shape will it return?    the fake implementation, run on shapes alone (``register_fake``)
* what is its gradient?         ``register_autograd`` (the same ``linear_backward``)

``torch.library.opcheck`` tests that the three answers agree (tests/test_ops.py).
The op is registered when ``course_lib`` is imported. Weight shaped ``(n_in, n_out)`` as in the lessons.
"""

import torch
from torch import Tensor

from .functions import check_linear_args, is_column_major, linear_backward, linear_forward

WHERE = "course_lib::linear"


@torch.library.custom_op(WHERE, mutates_args=())
def linear(input: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``y = x W + b`` for ``x`` ``(*, n_in)``, ``W`` ``(n_in, n_out)``, ``b`` ``(n_out,)`` or None."""
    check_linear_args(input, weight, bias, where=WHERE)
    device_type = input.device.type
    if not torch.amp.is_autocast_available(device_type):
        return linear_forward(input, weight, bias)
    # The op is not on autocast's list: it computes in its inputs' dtype, as the fake
    # implementation promises (cast the inputs, or use Linear_Layer, for mixed precision).
    with torch.autocast(device_type, enabled=False):
        return linear_forward(input, weight, bias)


@linear.register_fake
def _(input, weight, bias=None):
    check_linear_args(input, weight, bias, where=WHERE)
    return input.new_empty((*input.shape[:-1], weight.shape[1]))  # (*, n_in) -> (*, n_out)


def _setup_context(ctx, inputs, output):
    input, weight = inputs[:2]  # bias, when given, needs nothing saved
    needs = ctx.needs_input_grad
    ctx.save_for_backward(input if needs[1] else None, weight if needs[0] else None)
    ctx.weight_column_major = is_column_major(weight)


def _backward(ctx, grad_output):
    input, weight = ctx.saved_tensors
    needs = ctx.needs_input_grad  # two flags for a call without bias
    grads = linear_backward(grad_output, input, weight, needs, ctx.weight_column_major)
    return grads[:len(needs)]


linear.register_autograd(_backward, setup_context=_setup_context)
