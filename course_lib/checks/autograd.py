"""A student's autograd Function run by hand, and autograd's errors in course terms.

Autograd hides two things a check must see: it silently sums a gradient to its input's shape (so
a missing batch sum passes), and it hands backward an empty ``saved_tensors`` when forward saved
nothing. ``run_forward`` and ``run_backward`` call the Function's own static methods through a
``FakeCtx`` instead, and return what backward really returned; ``explain`` words an exception
from a student's Function the way the course does ("grad_weight has shape (3, 5), expected (5, 3):
transposed?").
"""

import re

import torch


def is_function_class(fn) -> bool:
    """Whether ``fn`` is an autograd Function class (called through ``fn.apply``), not a function."""
    return isinstance(fn, type) and issubclass(fn, torch.autograd.Function)


class FakeCtx:
    """Autograd's ``ctx`` for a check that calls a Function's forward and backward itself.

    Autograd silently sums a gradient to its input's shape (a missing batch sum goes unseen) and
    hands backward an empty ``saved_tensors`` when forward saved nothing; through this stand-in a
    check sees the raw gradients backward returns, and says what was not saved.
    """

    def __init__(self, needs_input_grad):
        self.needs_input_grad = tuple(bool(n) for n in needs_input_grad)
        self._saved = None

    def save_for_backward(self, *tensors):
        self._saved = tensors

    @property
    def saved_tensors(self):
        if self._saved is None:
            raise RuntimeError("ctx.saved_tensors is empty: did forward call ctx.save_for_backward(...)?")
        return self._saved

    def mark_non_differentiable(self, *tensors):
        pass

    def mark_dirty(self, *tensors):
        pass

    def set_materialize_grads(self, value):
        pass


def run_forward(fn, inputs, needs_input_grad) -> tuple:
    """``(ctx, output)`` of a Function class's forward on ``inputs`` through a ``FakeCtx``
    (either style: ``forward(ctx, *inputs)``, or ``forward(*inputs)`` with ``setup_context``)."""
    ctx = FakeCtx(needs_input_grad)
    with torch.no_grad():  # as inside apply
        if fn.setup_context is not torch.autograd.Function.setup_context:
            output = fn.forward(*inputs)
            fn.setup_context(ctx, tuple(inputs), output)
        else:
            output = fn.forward(ctx, *inputs)
    return ctx, output


def run_backward(fn, ctx, grad_output, n_inputs: int) -> tuple:
    """The gradients ``fn.backward`` returns, one per input, as returned (no reduction)."""
    with torch.no_grad():
        grads = fn.backward(ctx, grad_output)
    grads = tuple(grads) if isinstance(grads, (tuple, list)) else (grads,)
    if len(grads) < n_inputs or any(g is not None for g in grads[n_inputs:]):
        raise ValueError(f"backward returned {len(grads)} gradients for {n_inputs} inputs: return one "
                         f"per argument given to apply (apply was called with {n_inputs}), None for "
                         "an input that needs no gradient")
    return grads[:n_inputs]


def explain(error: Exception, names=()) -> str:
    """An exception from a student's Function, in course terms: ``raised <type>: <message>``.

    Autograd's "invalid gradient at index 1 - got [3, 5] but expected shape compatible with
    [5, 3]" names the gradient instead, with a guess at the cause.
    """
    text = next((ln.strip() for ln in str(error).splitlines() if ln.strip()), "")
    shape = re.search(r"invalid gradient at index (\d+) - got \[([\d, ]*)\] but expected shape "
                      r"compatible with \[([\d, ]*)\]", text)
    if shape:
        index = int(shape.group(1))
        got, expected = (tuple(int(v) for v in g.split(",") if v.strip()) for g in shape.groups()[1:])
        name = names[index] if index < len(names) else f"the gradient of input {index}"
        return f"{name} has shape {got}, expected {expected}{shape_hint(got, expected)}"
    if re.search(r"not enough values to unpack \(expected \d+, got 0\)", text):
        text += " (ctx.saved_tensors is empty: did forward call ctx.save_for_backward?)"
    elif isinstance(error, IndexError) and "tuple index out of range" in text:
        text += (" (ctx.needs_input_grad has one flag per argument given to apply: "
                 "apply(x, w) gives two)")
    return f"raised {type(error).__name__}: {text}"


def shape_hint(got: tuple, expected: tuple) -> str:
    """A guess at why a gradient has the wrong shape: transposed, or not summed over the batch."""
    if len(expected) == 2 and got == expected[::-1]:
        return ": transposed?"
    if len(got) > len(expected) and got[len(got) - len(expected):] == expected:
        return ": not summed over the batch?"
    return ""
