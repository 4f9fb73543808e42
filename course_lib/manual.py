"""``ManualLinear``: the Linear layer with a hand-called backward, no autograd involved.

Autograd records every operation and later calls each ``backward`` in reverse order. This class
lets a lesson do that bookkeeping by hand: call ``forward`` layer by layer, then ``backward`` layer
by layer from the loss back to the input, then take the SGD step.

It follows autograd's rule for what needs a gradient: a tensor needs one when it has
``requires_grad=True``, and a layer's output needs one when any of its inputs does. A gradient
that is not needed, or belongs to an absent bias, comes back as ``None``.
"""

import torch

from .functions import check_linear_args, is_column_major, linear_backward, linear_forward


class ManualLinear:
    """``y = x W + b`` (``W`` shaped ``(in_features, out_features)``) with an explicit backward.

    Example::

        layer = ManualLinear()
        y = layer.forward(x, W, b)          # no graph is recorded
        gx, gW, gb = layer.backward(dL_dy)  # (None if x needs no gradient, ...)
    """

    def __init__(self):
        self.input = self.weight = self.bias = None

    def forward(self, input, weight, bias=None):
        """Compute ``input @ weight + bias`` and remember what backward needs."""
        check_linear_args(input, weight, bias, where="ManualLinear.forward")
        self.input, self.weight, self.bias = input, weight, bias
        with torch.no_grad():
            output = linear_forward(input, weight, bias)
        # Mirror autograd's propagation rule without building a graph.
        if input.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad):
            output.requires_grad_(True)
        return output

    def backward(self, grad_output):
        """Return ``(grad_input, grad_weight, grad_bias)`` for ``grad_output = dL/d(output)``.

        grad_input  = grad_output @ weight.T   (None if input needs no gradient)
        grad_weight = input.T @ grad_output    (None if weight needs no gradient)
        grad_bias   = grad_output summed over rows (None if there is no bias or it needs none)
        """
        if self.weight is None:
            raise RuntimeError("ManualLinear.backward was called before forward; call forward first")
        expected = (*self.input.shape[:-1], self.weight.shape[1])
        if not isinstance(grad_output, torch.Tensor) or tuple(grad_output.shape) != expected:
            got = tuple(grad_output.shape) if isinstance(grad_output, torch.Tensor) else type(grad_output).__name__
            raise ValueError(
                f"ManualLinear.backward: grad_output must have the output's shape {expected}, got {got}"
            )
        bias = self.bias
        with torch.no_grad():
            return linear_backward(
                grad_output, self.input, self.weight,
                needs_input=self.input.requires_grad,
                needs_weight=self.weight.requires_grad,
                needs_bias=bias is not None and bias.requires_grad,
                weight_column_major=is_column_major(self.weight),
            )
