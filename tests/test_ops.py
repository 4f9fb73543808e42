"""``course_lib.ops``: the layer as the custom op ``torch.ops.course_lib.linear``."""

import pytest
import torch
import torch.nn.functional as F

import course_lib  # noqa: F401  (importing the package registers the op)
from course_lib.functions import Linear_Layer

OP = torch.ops.course_lib.linear


def make(shapes, bias=True, column_major=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    x_shape, w_shape = shapes
    x = torch.randn(x_shape, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(w_shape, generator=g, dtype=torch.float64)
    if column_major:  # stored as nn.Linear stores its weight, as course_lib.layers.Linear does
        w = w.t().contiguous().t()
    w.requires_grad_()
    b = torch.randn(w_shape[1], generator=g, dtype=torch.float64, requires_grad=True) if bias else None
    return x, w, b


OPCHECK = [
    ("2d", [(4, 5), (5, 3)], True, False),
    ("3d-nobias", [(2, 4, 5), (5, 3)], False, False),
    ("1d-column-major", [(5,), (5, 3)], True, True),
    ("no-features", [(3, 4, 0), (0, 5)], True, False),
    ("no-rows-column-major", [(0, 5), (5, 3)], True, True),
]


@pytest.mark.parametrize("name,shapes,bias,column_major", OPCHECK, ids=[c[0] for c in OPCHECK])
def test_opcheck(name, shapes, bias, column_major):
    """Schema, fake (shape-only) implementation, autograd registration, compiled graphs agree."""
    torch.library.opcheck(OP.default, make(shapes, bias, column_major))


@pytest.mark.parametrize("name,shapes,bias,column_major", OPCHECK, ids=[c[0] for c in OPCHECK])
def test_matches_f_linear_and_the_function(name, shapes, bias, column_major):
    x, w, b = make(shapes, bias, column_major)
    args = [t for t in (x, w, b) if t is not None]
    ours = OP(x, w, b)
    torch.testing.assert_close(ours, F.linear(x, w.t(), b))
    torch.testing.assert_close(ours, Linear_Layer.apply(x, w, b))
    grad = torch.randn(ours.shape, dtype=ours.dtype)
    got = torch.autograd.grad(ours, args, grad)
    expected = torch.autograd.grad(F.linear(x, w.t(), b), args, grad)
    for a, e in zip(got, expected):
        torch.testing.assert_close(a, e)
    assert got[1].stride() == w.stride() or w.numel() == 0  # the weight's own memory order


def test_bias_is_optional_and_fake_tensors_get_the_shape():
    x, w, _ = make([(2, 3, 5), (5, 4)], bias=False)
    torch.testing.assert_close(OP(x, w), x @ w)
    with torch._subclasses.FakeTensorMode() as mode:
        fake = OP(mode.from_tensor(x), mode.from_tensor(w))
    assert fake.shape == (2, 3, 4) and fake.dtype == torch.float64


@pytest.mark.parametrize("mode", ["real", "fake"])
def test_bad_input_is_reported_in_course_terms(mode):
    x, w = torch.randn(3, 783), torch.randn(784, 128)
    if mode == "fake":  # under torch.compile the fake implementation sees the shapes first
        fake_mode = torch._subclasses.FakeTensorMode()
        x, w = fake_mode.from_tensor(x), fake_mode.from_tensor(w)
    with pytest.raises(ValueError, match=r"course_lib::linear: input has 783 features .* expects 784"):
        OP(x, w)


def test_compiles_as_one_node_without_graph_break():
    x, w, b = make([(4, 5), (5, 3)])
    explanation = torch._dynamo.explain(lambda x, w, b: OP(x, w, b).relu())(x, w, b)
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1
    nodes = [str(n.target) for g in explanation.graphs for n in g.graph.nodes]
    assert "course_lib.linear" in nodes, nodes  # one opaque node, not traced through


def test_under_autocast_it_computes_in_its_inputs_dtype():
    """Not on autocast's list: output and gradients keep the inputs' dtype (the fake's promise)."""
    x, w, b = (t.detach().float().requires_grad_() for t in make([(4, 5), (5, 3)]))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = OP(x, w, b)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, F.linear(x, w.t(), b))
    y.sum().backward()
    assert w.grad.dtype == b.grad.dtype == torch.float32
