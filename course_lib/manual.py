"""Backpropagation by hand, with no autograd involved.

    ManualLinear           the Linear layer with a hand-called backward (lesson 4)
    cross_entropy          softmax cross-entropy, forward (log-sum-exp) and
    cross_entropy_backward   backward ``(softmax - onehot) / B`` (lesson 5)
    ManualMLP, train_step  the course's 784-128-64-10 network: forward, backward, step, zero_grad

Autograd records every operation and later calls each ``backward`` in reverse order. This class
lets a lesson do that bookkeeping by hand: call ``forward`` layer by layer, then ``backward`` layer
by layer from the loss back to the input, then take the SGD step.

It follows autograd's rule for what needs a gradient: a tensor needs one when it has
``requires_grad=True``, and a layer's output needs one when any of its inputs does. A gradient
that is not needed, or belongs to an absent bias, comes back as ``None``.
"""

import numbers

import torch
from torch import nn

from .functions import check_floating, check_linear_args, check_same, linear_backward, linear_forward
from .layers import Linear


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
            needs = (self.input.requires_grad, self.weight.requires_grad,
                     bias is not None and bias.requires_grad)
            return linear_backward(grad_output, self.input, self.weight, needs)


# ---------------------------------------------------------------------------------------------
# Softmax cross-entropy, forward and backward
# ---------------------------------------------------------------------------------------------

REDUCTIONS = ("mean", "sum")


def check_logits_and_labels(logits, labels, where: str) -> None:
    """Raise a clear error unless ``logits`` is ``(B, C)`` floating point and ``labels`` holds
    ``B`` integer classes in ``0 .. C-1`` on the same device."""
    check_floating("logits", logits, where)
    if logits.dim() != 2 or logits.shape[1] == 0:
        raise ValueError(f"{where}: logits must have shape (batch, classes) with at least one class, "
                         f"got shape {tuple(logits.shape)} (for one sample use logits.unsqueeze(0))")
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"{where}: labels must be a tensor of class indices, got {type(labels).__name__}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"{where}: labels must be integer class indices (e.g. torch.long), got dtype "
                        f"{labels.dtype}; probabilities or one-hot rows are not supported")
    batch, classes = logits.shape
    if tuple(labels.shape) != (batch,):
        raise ValueError(f"{where}: labels must have shape ({batch},), one class per row of logits "
                         f"(shape {tuple(logits.shape)}), got shape {tuple(labels.shape)}")
    if labels.device != logits.device:
        raise ValueError(f"{where}: labels are on {labels.device} but logits on {logits.device}")
    bad = ((labels < 0) | (labels >= classes)).nonzero()
    if len(bad):
        i = int(bad[0, 0])
        raise ValueError(f"{where}: labels[{i}] is {int(labels[i])}, out of range for {classes} classes "
                         f"(logits shape {tuple(logits.shape)}): every label must be in 0..{classes - 1}")


def _check_reduction(reduction, where: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"{where}: reduction must be 'mean' or 'sum', got {reduction!r}")


def log_softmax(logits):
    """``log p = z - logsumexp(z)`` row by row, computed as ``(z - m) - log sum_j exp(z_j - m)``
    with ``m`` the row's maximum: every ``exp`` gets an argument <= 0, so none overflows (and
    ``m`` is never added back, which would round away the small terms of a large ``m``)."""
    shifted = logits - logits.amax(dim=1, keepdim=True)  # (B, C) - (B, 1): each row's max is 0
    return shifted - shifted.exp().sum(dim=1, keepdim=True).log()


def cross_entropy(logits, labels, reduction: str = "mean"):
    """Softmax cross-entropy, as ``F.cross_entropy`` computes it.

    ``L_i = -log softmax(z_i)[y_i] = logsumexp(z_i) - z_{i, y_i}``; ``reduction="mean"`` returns
    ``(1/B) sum_i L_i`` (NaN for an empty batch, like PyTorch), ``"sum"`` returns ``sum_i L_i``.

    Args:
        logits: ``(B, C)`` floating point, the scores ``z`` before the softmax.
        labels: ``(B,)`` integer classes ``y`` in ``0 .. C-1``.
    """
    check_logits_and_labels(logits, labels, "cross_entropy")
    _check_reduction(reduction, "cross_entropy")
    losses = -log_softmax(logits).gather(1, labels.unsqueeze(1)).squeeze(1)  # (B,)
    return losses.mean() if reduction == "mean" else losses.sum()


def cross_entropy_backward(logits, labels, reduction: str = "mean"):
    """``dL/dz`` of ``cross_entropy(z, y, reduction)``: ``softmax(z) - onehot(y)``, divided by ``B``
    for the mean.

    From ``L_i = logsumexp(z_i) - z_{i, y_i}``: ``dL_i/dz_ij = softmax(z_i)_j - [j == y_i]``. Each
    row of the result sums to zero. An empty batch gives an empty ``(0, C)`` gradient.
    """
    check_logits_and_labels(logits, labels, "cross_entropy_backward")
    _check_reduction(reduction, "cross_entropy_backward")
    onehot = torch.zeros_like(logits).scatter_(1, labels.unsqueeze(1), 1.0)  # (B, C)
    grad = log_softmax(logits).exp() - onehot  # softmax(z) - onehot(y)
    return grad / logits.shape[0] if reduction == "mean" else grad


# ---------------------------------------------------------------------------------------------
# The course's MLP with every gradient written out
# ---------------------------------------------------------------------------------------------

PARAMETERS = ("weight1", "bias1", "weight2", "bias2", "weight3", "bias3")


class ManualMLP:
    """``NeuralNet`` (784 -> num_units -> num_units // 2 -> 10, ReLU) trained without autograd.

    Forward, for ``x`` of shape ``(B, 784)`` (images ``(B, 1, 28, 28)`` are flattened)::

        z1 = x W1 + b1,   h1 = relu(z1),   z2 = h1 W2 + b2,   h2 = relu(z2),   logits = h2 W3 + b3

    Backward, from ``G = dL/dlogits`` (e.g. ``cross_entropy_backward``), ``[.]`` being 1 or 0::

        dW3 = h2^T G    db3 = sum_rows G     dh2 = G W3^T     dz2 = dh2 * [z2 > 0]
        dW2 = h1^T dz2  db2 = sum_rows dz2   dh1 = dz2 W2^T   dz1 = dh1 * [z1 > 0]
        dW1 = x^T dz1   db1 = sum_rows dz1

    Weights are ``(in, out)`` as in ``course_lib.Linear``; ``params`` and ``grads`` are dicts keyed
    ``weight1, bias1, ..., bias3``. Like autograd, ``backward`` *adds* into ``grads`` until
    ``zero_grad`` clears them; ``step(lr)`` does ``p <- p - lr * grad``. No tensor here requires
    grad and no graph is recorded.

    ``ManualMLP(num_units)`` draws its weights exactly as ``NeuralNet(num_units)`` would from the
    same seed; ``ManualMLP.from_model(net)`` copies a ``NeuralNet``'s weights.
    """

    def __init__(self, num_units: int = 128, dtype=None, device=None):
        from .models import NeuralNet  # models sits above this module; the same random draws

        self._load(NeuralNet(num_units), dtype, device)

    @classmethod
    def from_model(cls, model, dtype=None, device=None) -> "ManualMLP":
        """A ``ManualMLP`` holding a copy of ``model``'s weights (a ReLU ``NeuralNet``)."""
        mlp = cls.__new__(cls)
        mlp._load(model, dtype, device)
        return mlp

    def _load(self, model, dtype, device) -> None:
        layers = [getattr(model, f"fc{k}", None) for k in (1, 2, 3)]
        if not all(isinstance(layer, Linear) and layer.bias is not None for layer in layers):
            raise TypeError(f"ManualMLP.from_model expects a course_lib NeuralNet, got {type(model).__name__}")
        act = getattr(model, "activation", None)
        if not isinstance(act, nn.ReLU):
            raise ValueError(f"ManualMLP implements ReLU only; this model's activation is {act!r}")
        self.params = {}
        for k, layer in enumerate(layers, start=1):
            for kind in ("weight", "bias"):
                p = getattr(layer, kind).detach()
                self.params[f"{kind}{k}"] = p.to(device=device or p.device, dtype=dtype or p.dtype, copy=True)
        self.grads = dict.fromkeys(PARAMETERS)
        self.cache = None  # the forward's tensors that backward needs

    def forward(self, x):
        """Return the logits ``(B, 10)`` and keep ``x, z1, h1, z2, h2`` for ``backward``."""
        p = self.params
        if isinstance(x, torch.Tensor) and x.dim() > 2:
            x = x.flatten(1)  # (B, 1, 28, 28) -> (B, 784)
        if isinstance(x, torch.Tensor) and x.dim() != 2:
            raise ValueError(f"ManualMLP.forward: input must be a batch (B, 784) or images (B, 1, 28, 28), "
                             f"got shape {tuple(x.shape)} (for one sample use x.unsqueeze(0))")
        check_linear_args(x, p["weight1"], p["bias1"], where="ManualMLP.forward")
        with torch.no_grad():  # nothing to record, even if x requires grad
            z1 = x @ p["weight1"] + p["bias1"]  # (B, 784) @ (784, 128) -> (B, 128)
            h1 = z1.relu()
            z2 = h1 @ p["weight2"] + p["bias2"]  # (B, 128) @ (128, 64) -> (B, 64)
            h2 = z2.relu()
            logits = h2 @ p["weight3"] + p["bias3"]  # (B, 64) @ (64, 10) -> (B, 10)
        self.cache = {"x": x, "z1": z1, "h1": h1, "z2": z2, "h2": h2, "logits": logits}
        return logits

    def backward(self, grad_logits):
        """Backpropagate ``grad_logits = dL/dlogits``; add the parameter gradients into ``grads``.

        Returns every gradient of this pass by name: ``logits, h2, z2, h1, z1`` and the six
        parameters (see the class docstring for the formulas).
        """
        if self.cache is None:
            raise RuntimeError("ManualMLP.backward was called before forward; call forward first")
        c, p = self.cache, self.params
        expected = tuple(c["logits"].shape)
        if not isinstance(grad_logits, torch.Tensor) or tuple(grad_logits.shape) != expected:
            got = tuple(grad_logits.shape) if isinstance(grad_logits, torch.Tensor) else type(grad_logits).__name__
            raise ValueError(f"ManualMLP.backward: grad_logits must have the logits' shape {expected}, got {got}")
        check_same("grad_logits", grad_logits, "logits", c["logits"], "ManualMLP.backward")
        g = {"logits": grad_logits}
        with torch.no_grad():
            g["weight3"], g["bias3"] = c["h2"].T @ grad_logits, grad_logits.sum(0)
            g["h2"] = grad_logits @ p["weight3"].T  # (B, 10) @ (10, 64) -> (B, 64)
            g["z2"] = g["h2"] * (c["z2"] > 0)  # ReLU passes the gradient where its input was > 0
            g["weight2"], g["bias2"] = c["h1"].T @ g["z2"], g["z2"].sum(0)
            g["h1"] = g["z2"] @ p["weight2"].T  # (B, 64) @ (64, 128) -> (B, 128)
            g["z1"] = g["h1"] * (c["z1"] > 0)
            g["weight1"], g["bias1"] = c["x"].T @ g["z1"], g["z1"].sum(0)
            for name in PARAMETERS:
                old = self.grads[name]
                self.grads[name] = g[name] if old is None else old + g[name]
        return g

    def step(self, lr: float) -> None:
        """One SGD step on every parameter, in place: ``p <- p - lr * grad``."""
        if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not 0 <= lr < float("inf"):
            raise ValueError(f"ManualMLP.step: lr must be a finite number >= 0, got {lr!r}")
        missing = [name for name in PARAMETERS if self.grads[name] is None]
        if missing:
            raise RuntimeError(f"ManualMLP.step: no gradient for {', '.join(missing)}; call backward first")
        with torch.no_grad():
            for name in PARAMETERS:
                self.params[name] -= lr * self.grads[name]

    def zero_grad(self) -> None:
        """Forget the accumulated gradients (set them to ``None``, as ``optimizer.zero_grad`` does)."""
        self.grads = dict.fromkeys(PARAMETERS)


def train_step(mlp: ManualMLP, images, labels, lr: float):
    """One SGD step on the mean cross-entropy, entirely by hand; returns the loss before the step."""
    logits = mlp.forward(images)
    loss = cross_entropy(logits, labels)
    mlp.zero_grad()
    mlp.backward(cross_entropy_backward(logits, labels))
    mlp.step(lr)
    return loss
