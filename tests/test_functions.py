"""Every hand-written Function against the native torch op: values, gradients, gradcheck."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.autograd import gradcheck, gradgradcheck
from torch.overrides import TorchFunctionMode

from conftest import DEVICES
from course_lib.functions import (
    Cube, Exp, LearnedSiLU, Linear_Layer, ReLU, Sigmoid, Square, Tanh, linear_backward,
)


def torch_linear(x, w, b=None):
    """The oracle: PyTorch's own linear with the weight in its (out, in) layout."""
    return F.linear(x, w.t(), b)


def column_major(w):
    """The same (in, out) values stored the way course_lib.layers.Linear stores its weight."""
    return w.t().contiguous().t()


# One table: (case id, Function, reference op, input shapes, which inputs require grad).
# Shapes: Linear_Layer takes (input, weight[, bias]); the gallery takes x (and slope).
CASES = [
    ("linear", Linear_Layer, torch_linear, [(4, 5), (5, 3), (3,)], [True, True, True]),
    ("linear-batch1", Linear_Layer, torch_linear, [(1, 5), (5, 3), (3,)], [True, True, True]),
    ("linear-3d", Linear_Layer, torch_linear, [(2, 4, 5), (5, 3), (3,)], [True, True, True]),
    ("linear-4d", Linear_Layer, torch_linear, [(2, 1, 3, 5), (5, 2), (2,)], [True, True, True]),
    ("linear-1d", Linear_Layer, torch_linear, [(5,), (5, 3), (3,)], [True, True, True]),
    ("linear-nobias", Linear_Layer, torch_linear, [(4, 5), (5, 3)], [True, True]),
    ("linear-3d-nobias", Linear_Layer, torch_linear, [(2, 4, 5), (5, 3)], [True, True]),
    ("linear-only-weight", Linear_Layer, torch_linear, [(4, 5), (5, 3), (3,)], [False, True, False]),
    ("linear-only-input", Linear_Layer, torch_linear, [(4, 5), (5, 3), (3,)], [True, False, False]),
    ("linear-only-bias", Linear_Layer, torch_linear, [(4, 5), (5, 3), (3,)], [False, False, True]),
    ("linear-data-input", Linear_Layer, torch_linear, [(4, 5), (5, 3), (3,)], [False, True, True]),
    ("square", Square, torch.square, [(3, 4)], [True]),
    ("cube", Cube, lambda x: torch.pow(x, 3), [(3, 4)], [True]),
    ("exp", Exp, torch.exp, [(3, 4)], [True]),
    ("relu", ReLU, torch.relu, [(3, 4)], [True]),
    ("sigmoid", Sigmoid, torch.sigmoid, [(3, 4)], [True]),
    ("tanh", Tanh, torch.tanh, [(3, 4)], [True]),
    ("silu-scalar-slope", LearnedSiLU, lambda x, a: a * F.silu(x), [(3, 4), ()], [True, True]),
    ("silu-feature-slope", LearnedSiLU, lambda x, a: a * F.silu(x), [(3, 4), (4,)], [True, True]),
    ("silu-only-slope", LearnedSiLU, lambda x, a: a * F.silu(x), [(3, 4), ()], [False, True]),
    ("silu-only-x", LearnedSiLU, lambda x, a: a * F.silu(x), [(3, 4), ()], [True, False]),
]
IDS = [c[0] for c in CASES]


def make_inputs(shapes, requires, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    # Keep values away from ReLU's kink at 0, where the derivative is undefined.
    out = []
    for shape, req in zip(shapes, requires):
        t = torch.randn(shape, generator=g, dtype=torch.float64)
        t = torch.where(t.abs() < 0.05, t + 0.1, t)
        out.append(t.to(dtype=dtype, device=device).requires_grad_(req))
    return out


def leaves(ts):
    return [t.detach().clone().requires_grad_(t.requires_grad) for t in ts]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name,fn,reference,shapes,requires", CASES, ids=IDS)
def test_matches_torch(name, fn, reference, shapes, requires, dtype, device):
    ours_in = make_inputs(shapes, requires, dtype, device)
    ref_in = leaves(ours_in)
    ours, ref = fn.apply(*ours_in), reference(*ref_in)
    torch.testing.assert_close(ours, ref)
    grad = torch.randn(ref.shape, dtype=dtype, device=device)
    ours.backward(grad)
    ref.backward(grad)
    for a, b in zip(ours_in, ref_in):
        if b.grad is None:
            assert a.grad is None, "a gradient was computed for a tensor that needs none"
        else:
            assert a.grad.shape == b.grad.shape
            torch.testing.assert_close(a.grad, b.grad)


@pytest.mark.parametrize("name,fn,reference,shapes,requires", CASES, ids=IDS)
def test_gradcheck_and_gradgradcheck(name, fn, reference, shapes, requires):
    inputs = make_inputs(shapes, requires, torch.float64, "cpu", seed=1)
    assert gradcheck(fn.apply, inputs)
    assert gradgradcheck(fn.apply, inputs)


def test_linear_column_major_weight_gives_gradient_in_its_own_layout():
    x = torch.randn(6, 5)
    w = column_major(torch.randn(5, 3)).requires_grad_()
    b = torch.randn(3, requires_grad=True)
    Linear_Layer.apply(x, w, b).sum().backward()
    assert w.grad.stride() == w.stride() == (1, 5)
    torch.testing.assert_close(w.grad, x.t() @ torch.ones(6, 3))
    # and a plain row-major weight gets a row-major gradient
    w2 = torch.randn(5, 3, requires_grad=True)
    Linear_Layer.apply(x, w2).sum().backward()
    assert w2.grad.stride() == (3, 1)


def test_linear_column_major_gradcheck():
    x = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    w = column_major(torch.randn(5, 3, dtype=torch.float64)).requires_grad_()
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    assert gradcheck(Linear_Layer.apply, (x, w, b))
    assert gradgradcheck(Linear_Layer.apply, (x, w, b))


class OpLog(TorchFunctionMode):
    """Record the names of the torch functions called while active."""

    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.names.append(getattr(func, "__name__", str(func)))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize(
    "requires,matmuls,sums",
    [
        ((True, True, True), 2, 1),
        ((True, False, False), 1, 0),
        ((False, True, False), 1, 0),
        ((False, False, True), 0, 1),
        ((False, True, True), 1, 1),
    ],
)
def test_linear_backward_computes_only_what_is_needed(requires, matmuls, sums):
    x, w, b = make_inputs([(4, 5), (5, 3), (3,)], requires, torch.float64, "cpu")
    out = Linear_Layer.apply(x, w, b)
    grad = torch.ones_like(out)
    # out.grad_fn is the ctx that forward filled in: call backward with it directly, logging ops.
    with OpLog() as log:
        grads = Linear_Layer.backward(out.grad_fn, grad)
    assert [g is not None for g in grads] == list(requires)
    assert sum(n in ("mm", "matmul") for n in log.names) == matmuls, log.names
    assert log.names.count("sum") == sums, log.names


def test_linear_saves_only_what_backward_needs():
    x = torch.randn(4, 5)  # data: needs no gradient
    w = torch.randn(5, 3, requires_grad=True)
    out = Linear_Layer.apply(x, w, None)
    saved_input, saved_weight = out.grad_fn.saved_tensors
    assert saved_weight is None  # dL/dx is not needed, so W is not kept
    assert torch.equal(saved_input, x)
    out = Linear_Layer.apply(x.requires_grad_(), w.detach(), None)
    saved_input, saved_weight = out.grad_fn.saved_tensors
    assert saved_input is None and saved_weight is not None


def test_linear_backward_helper_returns_none_for_unneeded():
    g, x, w = torch.randn(4, 3), torch.randn(4, 5), torch.randn(5, 3)
    gi, gw, gb = linear_backward(g, x, w, False, True, False)
    assert gi is None and gb is None
    torch.testing.assert_close(gw, x.t() @ g)


def test_linear_output_can_be_modified_in_place():
    # nn.ReLU(inplace=True) after the layer must work (the output is not a view).
    x = torch.randn(2, 3, 5)
    w = torch.randn(5, 4, requires_grad=True)
    out = Linear_Layer.apply(x, w, None)
    out.relu_()
    out.sum().backward()
    assert w.grad is not None and w.grad.shape == (5, 4)


@settings(max_examples=40, deadline=None)
@given(
    lead=st.lists(st.integers(1, 4), min_size=0, max_size=3),
    in_f=st.integers(1, 7),
    out_f=st.integers(1, 7),
    bias=st.booleans(),
    col_major=st.booleans(),
)
def test_linear_random_shapes(lead, in_f, out_f, bias, col_major):
    g = torch.Generator().manual_seed(len(lead) * 100 + in_f * 10 + out_f)
    x = torch.randn(*lead, in_f, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(in_f, out_f, generator=g, dtype=torch.float64)
    w = (column_major(w) if col_major else w).requires_grad_()
    b = torch.randn(out_f, generator=g, dtype=torch.float64, requires_grad=True) if bias else None
    ours_in = [x, w] + ([b] if bias else [])
    ref_in = leaves(ours_in)
    ours, ref = Linear_Layer.apply(*ours_in), torch_linear(*ref_in)
    assert ours.shape == (*lead, out_f)
    torch.testing.assert_close(ours, ref)
    grad = torch.randn(ref.shape, generator=g, dtype=torch.float64)
    ours.backward(grad)
    ref.backward(grad)
    for a, r in zip(ours_in, ref_in):
        torch.testing.assert_close(a.grad, r.grad)


# ------------------------------------------------------------------------------------------
# Bad input: a clear message that names what was received and what was expected.
# ------------------------------------------------------------------------------------------

BAD_LINEAR = [
    ("feature count", lambda: (torch.randn(3, 783), torch.randn(784, 128), None), ValueError,
     ["783 features", "(3, 783)", "784", "(784, 128)"]),
    ("weight 1-D", lambda: (torch.randn(3, 4), torch.randn(4), None), ValueError,
     ["weight must be 2-D", "(4,)"]),
    ("weight 3-D", lambda: (torch.randn(3, 4), torch.randn(4, 2, 2), None), ValueError,
     ["weight must be 2-D", "(4, 2, 2)"]),
    ("bias length", lambda: (torch.randn(3, 4), torch.randn(4, 2), torch.randn(3)), ValueError,
     ["bias must have shape (2,)", "(3,)"]),
    ("bias per-sample (the source's mistake)",
     lambda: (torch.randn(3, 4), torch.randn(4, 2), torch.randn(3, 2)), ValueError,
     ["bias must have shape (2,)", "(3, 2)"]),
    ("dtype mismatch", lambda: (torch.randn(3, 4, dtype=torch.float64), torch.randn(4, 2), None),
     TypeError, ["input has dtype torch.float64", "weight has dtype torch.float32"]),
    ("bias dtype", lambda: (torch.randn(3, 4), torch.randn(4, 2), torch.randn(2, dtype=torch.float64)),
     TypeError, ["bias has dtype torch.float64", "torch.float32"]),
    ("integer input", lambda: (torch.ones(3, 4, dtype=torch.int64), torch.randn(4, 2), None),
     TypeError, ["input must be a floating-point tensor", "torch.int64"]),
    ("integer weight", lambda: (torch.randn(3, 4), torch.ones(4, 2, dtype=torch.int32), None),
     TypeError, ["weight must be a floating-point tensor", "torch.int32"]),
    ("not a tensor", lambda: ([[1.0, 2.0]], torch.randn(2, 2), None), TypeError,
     ["input must be a torch.Tensor", "list"]),
    ("0-D input", lambda: (torch.tensor(1.0), torch.randn(1, 2), None), ValueError,
     ["0-D tensor"]),
    ("different devices", lambda: (torch.randn(3, 4, device="meta"), torch.randn(4, 2), None),
     ValueError, ["input is on device meta", "weight is on cpu"]),
]


@pytest.mark.parametrize("case,make,error,phrases", BAD_LINEAR, ids=[c[0] for c in BAD_LINEAR])
def test_linear_bad_input_messages(case, make, error, phrases):
    x, w, b = make()
    with pytest.raises(error) as info:
        Linear_Layer.apply(x, w, b)
    message = str(info.value)
    assert message.startswith("Linear_Layer:")
    for phrase in phrases:
        assert phrase in message, f"{phrase!r} not in {message!r}"


def test_bad_input_is_caught_before_any_matmul():
    x, w = torch.randn(3, 783), torch.randn(784, 128)
    with OpLog() as log, pytest.raises(ValueError):
        Linear_Layer.apply(x, w)
    assert not {"mm", "addmm", "matmul"} & set(log.names)


@pytest.mark.parametrize("fn", [Square, Cube, Exp, ReLU, Sigmoid, Tanh])
def test_gallery_rejects_integer_input(fn):
    with pytest.raises(TypeError, match=f"{fn.__name__}: x must be a floating-point tensor, got dtype torch.int64"):
        fn.apply(torch.arange(3))


def test_learned_silu_bad_slope():
    x = torch.randn(3, 4)
    with pytest.raises(ValueError, match=r"slope of shape \(3,\) does not broadcast to x of shape \(3, 4\)"):
        LearnedSiLU.apply(x, torch.ones(3))
    with pytest.raises(ValueError, match=r"slope of shape \(2, 3, 4\)"):
        LearnedSiLU.apply(x, torch.ones(2, 3, 4))  # would silently grow the output
    with pytest.raises(TypeError, match="slope has dtype torch.float64 but x has dtype torch.float32"):
        LearnedSiLU.apply(x, torch.ones((), dtype=torch.float64))
