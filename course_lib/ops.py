"""The Linear layer as a PyTorch operator: ``torch.ops.course_lib.linear(input, weight, bias)``.

``FastLinear`` (an autograd Function, ``fast.py``) is Python that ``torch.compile`` has to trace
through. A custom op registered with ``torch.library`` is, to PyTorch, an operator like ``aten::addmm``:
compiled graphs call it as one opaque node, and it works with every part of PyTorch that asks an
operator these questions, each answered here once:

* what does it compute?         the implementation (the same ``linear_forward`` as ``FastLinear``)
* what shape will it return?    the fake implementation, run on shapes alone (``register_fake``)
* what is its gradient?         ``register_autograd`` (the same ``linear_backward``)
* how is it batched?            ``register_vmap``: ``torch.vmap`` over samples is more rows for
                                the op itself; over weights (an ensemble) one batched matmul
* what dtype under autocast?    an autocast kernel: the inputs are cast to the autocast dtype, as
                                ``F.linear``'s are (float64 is left alone), and each gradient
                                comes back in its input's own dtype

``torch.library.opcheck`` tests that the first three agree; tests/test_ops.py checks all five
against ``F.linear``. Not answered in torch 2.14: ``torch.func.grad`` (so ``vmap(grad(...))``)
refuses the op, as ``register_autograd`` builds an old-style autograd.Function (pytorch/pytorch
issue 170834); ``.backward()`` works, vmapped or not, and ``FastLinear`` serves ``torch.func``.
The op is registered when ``course_lib`` is imported. Weight shaped ``(n_in, n_out)`` as in the lessons.
"""

import math

import torch
from torch import Tensor

from .fast import autocast_args, check_args, is_column_major, linear_backward, linear_forward

WHERE = "course_lib::linear"


@torch.library.custom_op(WHERE, mutates_args=())
def linear(input: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``y = x W + b`` for ``x`` ``(*, n_in)``, ``W`` ``(n_in, n_out)``, ``b`` ``(n_out,)`` or None."""
    check_args(input, weight, bias, where=WHERE)
    return linear_forward(input, weight, bias)


@linear.register_fake
def _(input, weight, bias=None):
    check_args(input, weight, bias, where=WHERE)
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


# ----- How is it batched? --------------------------------------------------------------------
# torch.vmap calls the rule with plain tensors, each with its batch dimension at in_dims[i]
# (None: shared by every sample), and expects (output, where output's batch dimension is).


def _vmap(info, in_dims, input, weight, bias=None):
    args = autocast_args(input, weight, bias)  # vmap comes before autocast: cast here first
    dims = (*in_dims, None)[:3]  # a call without bias has two in_dims
    sample = [_one_sample(t, d) for t, d in zip(args, dims)]
    check_args(*sample, where=WHERE)  # errors quote one sample's shapes, as the user wrote
    input, weight, bias = (t if d is None else t.movedim(d, 0) for t, d in zip(args, dims))
    if dims[1] is None and dims[2] is None:  # shared weight and bias: the samples are more rows
        return linear(input, weight, bias), 0  # (B, *, n_in) -> (B, *, n_out), the op itself
    return _per_sample_parameters(input, weight, bias, sample[0].shape), 0


linear.register_vmap(_vmap)


def _per_sample_parameters(input, weight, bias, sample_shape):
    """A weight ``(B, n_in, n_out)`` or a bias ``(B, n_out)`` per sample (an ensemble): one matmul.

    ``input`` is ``(B, *, n_in)`` or, shared by every sample, ``(*, n_in)`` (``sample_shape``);
    a shared weight or bias is 2-D or 1-D and broadcasts over the batch. Returns ``(B, *, n_out)``.
    """
    leading = sample_shape[:-1]  # one sample's (*)
    batch = input.shape[:input.dim() - len(sample_shape)]  # (B,) or () for a shared input
    rows = input.reshape(*batch, math.prod(leading), sample_shape[-1])  # (B?, N, n_in)
    output = rows.matmul(weight)  # @ (B?, n_in, n_out) -> (B, N, n_out)
    if bias is not None:
        output = output + (bias.unsqueeze(-2) if bias.dim() == 2 else bias)  # (B, 1, n_out)
    return output.reshape(output.shape[0], *leading, output.shape[-1])


def _one_sample(t, dim):
    """A tensor shaped like one sample of ``t``, batched at ``dim`` (a view; empty if no samples)."""
    if t is None or dim is None:
        return t
    t = t.movedim(dim, 0)
    return t[0] if t.shape[0] else t.new_empty(t.shape[1:])


# ----- What dtype under autocast? ------------------------------------------------------------
# Inside torch.autocast the dispatcher calls this kernel before the op: it casts the inputs as
# F.linear's are cast, then calls the op with autocast off, so the op computes in that dtype.
# The casts are ordinary .to() calls, so autograd turns each gradient back to its input's dtype.
# (torch.library.register_autocast would cast to one dtype fixed when registering, where
# F.linear uses torch.autocast's dtype argument: bfloat16 by default on the CPU, float16 on CUDA.)


def _autocast(input, weight, bias=None):
    device_type = weight.device.type
    input, weight, bias = autocast_args(input, weight, bias)
    with torch.autocast(device_type, enabled=False):
        return linear(input, weight, bias)


torch.library.impl(WHERE, ["AutocastCPU", "AutocastCUDA", "AutocastMPS"], _autocast)
