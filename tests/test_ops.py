"""``course_lib.ops``: the layer as the custom op ``torch.ops.course_lib.linear``."""

import itertools

import pytest
import torch
import torch.nn.functional as F
from conftest import DEVICES
from torch.func import grad, vmap

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


# ----- vmap: the native ops are the oracle -----------------------------------------------------
# One sample: input (4, 5) (or (5,)), weight (5, 3), bias (3,). A batched argument has its B
# samples stacked at its in_dim, so any in_dim other than 0 gives a non-contiguous tensor.


def batched(sample, in_dim, batch, seed):
    """``batch`` random tensors shaped like ``sample``, stacked at ``in_dim`` (None: ``sample``)."""
    g = torch.Generator().manual_seed(seed)
    if in_dim is None:
        return torch.randn(sample, generator=g, dtype=torch.float64)
    return torch.randn((batch, *sample), generator=g, dtype=torch.float64).movedim(0, in_dim)


def loop(args, in_dims, batch):
    """The oracle: ``F.linear`` on one sample at a time, stacked."""
    outputs = []
    for i in range(batch):
        x, w, b = (t if d is None or t is None else t.select(d, i) for t, d in zip(args, in_dims))
        outputs.append(F.linear(x, w.t(), b))
    return torch.stack(outputs)


def native_vmap(args, in_dims):
    """The other oracle: ``torch.func.vmap`` over ``F.linear`` (which has its own batching rule)."""
    return vmap(lambda x, w, b: F.linear(x, w.t(), b), in_dims=in_dims)(*args)


X_DIMS, W_DIMS, B_DIMS = (None, 0, 1, -1), (None, 0, 2, -2), (None, 0, -1, "no bias")
IN_DIMS = [d for d in itertools.product(X_DIMS, W_DIMS, B_DIMS) if d != (None, None, None)
           and d != (None, None, "no bias")]  # at least one argument batched


@pytest.mark.parametrize("batch", [3, 0])
@pytest.mark.parametrize("in_dims", IN_DIMS, ids=str)
def test_vmap_equals_a_loop_for_every_in_dims(in_dims, batch):
    x_dim, w_dim, b_dim = in_dims
    x = batched((4, 5), x_dim, batch, 1)
    w = batched((5, 3), w_dim, batch, 2)
    b = None if b_dim == "no bias" else batched((3,), b_dim, batch, 3)
    dims = (x_dim, w_dim, None if b is None else b_dim)
    got = vmap(OP, in_dims=dims)(x, w, b)
    assert got.shape == (batch, 4, 3)
    torch.testing.assert_close(got, native_vmap((x, w, b), dims))
    if batch:
        torch.testing.assert_close(got, loop((x, w, b), dims, batch))


@pytest.mark.parametrize("in_dims", [(0, None), (None, 0), (0, 0)], ids=str)
def test_vmap_without_a_bias_argument(in_dims):
    """``OP(x, w)``: the rule gets two in_dims, not three."""
    x, w = batched((5,), in_dims[0], 4, 1), batched((5, 3), in_dims[1], 4, 2)
    got = vmap(OP, in_dims=in_dims)(x, w)
    torch.testing.assert_close(got, loop((x, w, None), (*in_dims, None), 4))


@pytest.mark.parametrize("out_dims", [0, 1, -1])
def test_vmap_out_dims(out_dims):
    x, w = batched((4, 5), 1, 6, 1), batched((5, 3), 0, 6, 2)
    got = vmap(OP, in_dims=(1, 0, None), out_dims=out_dims)(x, w, None)
    torch.testing.assert_close(got, loop((x, w, None), (1, 0, None), 6).movedim(0, out_dims))


def test_vmap_of_non_contiguous_samples_and_a_column_major_weight():
    x = torch.randn(6, 5, 4, dtype=torch.float64).transpose(1, 2)  # each sample (4, 5), transposed
    w = torch.randn(3, 5, dtype=torch.float64).t()  # stored as nn.Linear stores its weight
    W = torch.randn(6, 3, 5, dtype=torch.float64).transpose(1, 2)  # the same, one per sample
    b = torch.randn(3, 6, dtype=torch.float64).t()  # (6, 3), non-contiguous
    assert not (x.is_contiguous() or w.is_contiguous() or W.is_contiguous() or b.is_contiguous())
    for args in [(x, w, b), (x, W, b)]:
        dims = (0, None if args[1] is w else 0, 0)
        torch.testing.assert_close(vmap(OP, in_dims=dims)(*args), loop(args, dims, 6))


def test_nested_vmap_equals_a_double_loop():
    """Samples inside models: the inner vmap over samples, the outer over an ensemble's weights."""
    x = torch.randn(2, 7, 5, dtype=torch.float64)  # 2 models x 7 samples x 5 features
    W, b = torch.randn(2, 5, 3, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
    per_sample = vmap(OP, in_dims=(0, None, None))
    got = vmap(per_sample, in_dims=(0, 0, None))(x, W, b)
    expected = torch.stack([torch.stack([F.linear(x[m, s], W[m].t(), b) for s in range(7)])
                            for m in range(2)])
    torch.testing.assert_close(got, expected)
    got = vmap(vmap(OP, in_dims=(None, 0, None)), in_dims=(0, None, None))(x, W, b)
    torch.testing.assert_close(got, torch.einsum("msi,kio->mkso", x, W) + b)  # every model, sample


def test_vmap_with_shared_parameters_is_the_op_itself():
    """Samples sharing weight and bias are more rows: one call of the op, which the graph shows."""
    x, w, b = batched((4, 5), 0, 3, 1), batched((5, 3), None, 0, 2), batched((3,), None, 0, 3)
    explanation = torch._dynamo.explain(vmap(OP, in_dims=(0, None, None)))(x, w, b)
    nodes = [str(n.target) for g in explanation.graphs for n in g.graph.nodes]
    assert nodes.count("course_lib.linear") == 1 and explanation.graph_break_count == 0


@pytest.mark.parametrize("in_dims,shapes,message", [
    ((0, None), [(3, 4), (5, 2)], r"input has 4 features \(input shape \(4,\)\)"),
    ((0, None), [(5,), (5, 2)], r"input must have shape \(\*, 5\), got a 0-D tensor"),
    ((None, 0), [(5,), (3, 2)], r"weight must be 2-D .* got shape \(2,\)"),
    ((None, 0, 0), [(5,), (3, 5, 2), (3, 4)], r"bias must have shape \(2,\), .* got shape \(4,\)"),
])
def test_vmap_reports_bad_input_in_one_samples_terms(in_dims, shapes, message):
    """A (5,) batch of 0-D samples is not silently taken as one sample with 5 features."""
    args = [torch.randn(s) for s in shapes]
    with pytest.raises(ValueError, match="course_lib::linear: " + message):
        vmap(OP, in_dims=in_dims)(*args)


# ----- Gradients through vmap ------------------------------------------------------------------


def per_sample_loss_grads(x, w, b, y):
    """The oracle: one ``torch.autograd.grad`` per sample, through ``F.linear``."""
    grads = []
    for i in range(len(x)):
        w_i, b_i = w.detach().requires_grad_(), b.detach().requires_grad_()
        loss = (F.linear(x[i], w_i.t(), b_i) - y[i]).square().sum()
        grads.append(torch.autograd.grad(loss, (w_i, b_i)))
    return [torch.stack(g) for g in zip(*grads)]


def test_per_sample_gradients_with_one_weight_copy_per_sample():
    """vmap with the parameters expanded per sample, then one backward: a loop of per-sample grads."""
    x, y = torch.randn(6, 4, 5, dtype=torch.float64), torch.randn(6, 4, 3, dtype=torch.float64)
    w, b = torch.randn(5, 3, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
    ws = w.expand(6, 5, 3).clone().requires_grad_()  # one copy per sample: its own gradient
    bs = b.expand(6, 3).clone().requires_grad_()
    loss = (vmap(OP)(x, ws, bs) - y).square().sum()
    got = torch.autograd.grad(loss, (ws, bs))
    for g, e in zip(got, per_sample_loss_grads(x, w, b, y)):
        torch.testing.assert_close(g, e)


@pytest.mark.parametrize("in_dims", [(0, None, None), (1, None, None), (None, 0, 0)], ids=str)
def test_backward_through_vmap_equals_backward_through_f_linear(in_dims):
    """Ordinary autograd through a vmapped call: the op's registered gradient, summed over samples."""
    x, w = batched((4, 5), in_dims[0], 3, 1), batched((5, 3), in_dims[1], 3, 2)
    b = batched((3,), in_dims[2], 3, 3)
    args = [t.requires_grad_() for t in (x, w, b)]
    out = vmap(OP, in_dims=in_dims)(*args)
    g = torch.randn(out.shape, dtype=out.dtype)
    got = torch.autograd.grad(out, args, g)
    expected = torch.autograd.grad(native_vmap(args, in_dims), args, g)
    for a, e in zip(got, expected):
        torch.testing.assert_close(a, e)


TORCH_FUNC_GRAD = (
    "torch 2.14: register_autograd builds an old-style autograd.Function (no setup_context), which "
    "torch.func transforms refuse (pytorch/pytorch#170834, #179652). When this XPASSes, torch.func "
    "works through the op: update lesson 09 and this test."
)


@pytest.mark.xfail(raises=RuntimeError, strict=True, reason=TORCH_FUNC_GRAD)
def test_torch_func_per_sample_gradients_through_the_op():
    x, y = torch.randn(6, 4, 5, dtype=torch.float64), torch.randn(6, 4, 3, dtype=torch.float64)
    w, b = torch.randn(5, 3, dtype=torch.float64), torch.randn(3, dtype=torch.float64)

    def loss(w, b, x, y):
        return (OP(x, w, b) - y).square().sum()

    got = vmap(grad(loss, argnums=(0, 1)), in_dims=(None, None, 0, 0))(w, b, x, y)
    for g, e in zip(got, per_sample_loss_grads(x, w, b, y)):
        torch.testing.assert_close(g, e)


def test_torch_func_grad_error_is_the_known_one():
    """The xfail above fails for the known reason, not another."""
    x, w = torch.randn(5), torch.randn(5, 3)
    with pytest.raises(RuntimeError, match="must override the setup_context staticmethod"):
        grad(lambda w: OP(x, w).sum())(w)


# ----- Autocast: F.linear under the same autocast is the oracle ---------------------------------

LOW = {"cpu": torch.bfloat16, "cuda": torch.float16}  # autocast's default dtype on each device


def floats(device, dtype=torch.float32):
    x, w, b = make([(4, 6, 5), (5, 3)])
    return [t.detach().to(device, dtype).requires_grad_() for t in (x, w, b)]


@pytest.mark.parametrize("dtype", [None, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_under_autocast_it_computes_as_f_linear_does(device, dtype):
    """Output in the autocast dtype, equal to F.linear's; float32 gradients for float32 inputs."""
    x, w, b = floats(device)
    kwargs = {} if dtype is None else {"dtype": dtype}
    with torch.autocast(device, **kwargs):
        ours, reference = OP(x, w, b), F.linear(x, w.t(), b)
    assert ours.dtype == reference.dtype == (dtype or LOW[device])
    torch.testing.assert_close(ours, reference)
    g = torch.randn(ours.shape, device=device).to(ours.dtype)
    got = torch.autograd.grad(ours, (x, w, b), g)
    expected = torch.autograd.grad(reference, (x, w, b), g)
    for a, e in zip(got, expected):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a, e, atol=0.05, rtol=0.02)  # each rounded to 16 bits once


def test_under_autocast_float64_is_left_alone():
    x, w, b = floats("cpu", torch.float64)
    with torch.autocast("cpu"):
        ours, reference = OP(x, w, b), F.linear(x, w.t(), b)
    assert ours.dtype == reference.dtype == torch.float64
    torch.testing.assert_close(ours, reference)
    ours.sum().backward()
    assert x.grad.dtype == w.grad.dtype == b.grad.dtype == torch.float64


def test_under_autocast_mixed_dtypes_are_cast_as_f_linear_casts_them():
    x, w, b = floats("cpu")
    w16 = w.detach().bfloat16()
    with torch.autocast("cpu"):
        ours, reference = OP(x, w16, b), F.linear(x, w16.t(), b)
    assert ours.dtype == reference.dtype == torch.bfloat16
    torch.testing.assert_close(ours, reference)


def test_outside_autocast_mixed_dtypes_are_still_refused():
    x, w, b = floats("cpu")
    with pytest.raises(TypeError, match="weight has dtype torch.bfloat16"):
        OP(x, w.bfloat16(), b)


@pytest.mark.parametrize("in_dims", [(0, None, None), (None, 0, 0), (0, 0, None)], ids=str)
def test_vmap_under_autocast_equals_a_loop_under_autocast(in_dims):
    """Both batching paths compute as F.linear does on each sample under autocast.

    (Not vmap over F.linear: in torch 2.14 that returns float32 under autocast, unlike F.linear.)
    """
    x = batched((4, 5), in_dims[0], 3, 1).float()
    w = batched((5, 3), in_dims[1], 3, 2).bfloat16()  # mixed dtypes, as autocast allows
    b = batched((3,), in_dims[2], 3, 3).float()
    with torch.autocast("cpu"):
        ours, reference = vmap(OP, in_dims=in_dims)(x, w, b), loop((x, w, b), in_dims, 3)
    assert ours.dtype == reference.dtype == torch.bfloat16
    torch.testing.assert_close(ours, reference, atol=0.05, rtol=0.02)  # bias added apart: 2 roundings


def test_opcheck_under_autocast():
    with torch.autocast("cpu"):
        torch.library.opcheck(OP.default, floats("cpu"))


# ----- torch.compile over the batched and autocast op ------------------------------------------


@pytest.mark.parametrize("in_dims", [(0, None, None), (None, 0, 0)], ids=str)
def test_compiled_vmap_matches_eager_and_has_no_graph_break(in_dims):
    x, w, b = (batched(s, d, 3, i) for i, (s, d) in enumerate([((4, 5), in_dims[0]),
                                                               ((5, 3), in_dims[1]),
                                                               ((3,), in_dims[2])]))
    torch._dynamo.reset()
    compiled = torch.compile(vmap(OP, in_dims=in_dims), fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x, w, b), native_vmap((x, w, b), in_dims))


def test_compiled_under_autocast_matches_eager():
    x, w, b = floats("cpu")

    def step(x, w, b):
        with torch.autocast("cpu"):
            return OP(x, w, b)

    torch._dynamo.reset()
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")(x, w, b)
    eager = step(x, w, b)
    assert compiled.dtype == torch.bfloat16
    torch.testing.assert_close(compiled, eager)
    compiled.float().sum().backward()
    assert w.grad.dtype == torch.float32
