"""The fast layer's cost per call, counted: a deterministic guard, not a timed test.

One forward + backward of ``fast.linear`` (what ``layers.Linear`` runs) against one of
``F.linear`` on the same numbers: the aten operators dispatched (a ``TorchDispatchMode``) and the
Python functions entered (``sys.setprofile``) must stay within the budget stated in
``course_lib.fast``. The counts are the same on every run, whatever the machine is doing.
"""

import pytest
import torch
import torch.nn.functional as F

from course_lib import fast
from course_lib.counting import count_calls
from course_lib.fast import BUDGET_EXTRA_ATEN_OPS, BUDGET_EXTRA_CALLS, BUDGET_OWN_CALLS, FastLinear
from course_lib.functions import Linear_Layer
from course_lib.layers import Linear


def step(fn, x, w, b, grad):
    """One forward + backward of ``fn(x, w, b)``, gradients cleared first."""
    def run():
        w.grad = x.grad = None
        if b is not None:
            b.grad = None
        fn(x, w, b).backward(grad)
    return run


def both(in_f=128, out_f=64, batch=64, input_grad=True, bias=True, make=fast.linear):
    """Counts for ``make`` on a ``Linear``'s parameters and for ``F.linear`` on the same numbers."""
    torch.manual_seed(0)
    ours = Linear(in_f, out_f, bias=bias)
    theirs = ours.to_torch()
    x = torch.randn(batch, in_f, requires_grad=input_grad)
    grad = torch.randn(batch, out_f)
    return (count_calls(step(make, x, ours.weight, ours.bias, grad)),
            count_calls(step(F.linear, x, theirs.weight, theirs.bias, grad)))


CASES = [("hidden layer", {}), ("first layer, data input", {"in_f": 784, "input_grad": False}),
         ("no bias", {"bias": False}), ("batch 512", {"batch": 512})]


@pytest.mark.parametrize("case,kwargs", CASES, ids=[c[0] for c in CASES])
def test_fast_linear_stays_within_the_budget(case, kwargs):
    ours, theirs = both(**kwargs)
    assert len(ours.aten_ops) - len(theirs.aten_ops) <= BUDGET_EXTRA_ATEN_OPS, (
        ours.aten_ops, theirs.aten_ops)
    assert len(ours.own_calls) <= BUDGET_OWN_CALLS, ours.own_calls
    assert ours.python_calls - theirs.python_calls <= BUDGET_EXTRA_CALLS
    # the same matrix products as F.linear: one fused addmm forward, one mm per needed gradient
    assert ours.aten_ops.count("addmm") == theirs.aten_ops.count("addmm") == int("bias" not in case)
    assert ours.aten_ops.count("mm") == theirs.aten_ops.count("mm")


def test_counts_are_the_same_on_every_run():
    assert both() == both()


@pytest.mark.parametrize("make", [FastLinear.apply, Linear_Layer.apply],
                         ids=["FastLinear.apply", "Linear_Layer.apply"])
def test_the_guard_sees_a_costlier_function(make):
    """``FastLinear.apply`` binds its arguments with ``inspect.signature`` on every call, the plain
    ``Linear_Layer`` runs every detailed check and copies ``grad_weight`` into the weight's order:
    both are over the budget, which is what ``fast.linear`` exists to avoid."""
    ours, theirs = both(make=make)
    over_calls = ours.python_calls - theirs.python_calls > BUDGET_EXTRA_CALLS
    over_ops = len(ours.aten_ops) - len(theirs.aten_ops) > BUDGET_EXTRA_ATEN_OPS
    assert over_calls or over_ops, (ours, theirs)
