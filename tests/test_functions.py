"""Every hand-written Function against the native torch op: values, gradients, gradcheck,
and the same under today's transforms: vmap (per-sample), torch.compile, autocast."""

import pytest
import torch
import torch.nn.functional as F
from conftest import CUDA, DEVICES
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.autograd import gradcheck, gradgradcheck
from torch.func import grad, vmap
from torch.overrides import TorchFunctionMode

import course_lib  # noqa: F401  (registers torch.ops.course_lib.linear)
from course_lib import fast
from course_lib.fast import FastLinear
from course_lib.functions import (
    Cube,
    Exp,
    LearnedSiLU,
    Linear_Layer,
    ReLU,
    Sigmoid,
    Square,
    Tanh,
    linear_backward,
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
    ("linear-no-features", Linear_Layer, torch_linear, [(3, 4, 0), (0, 5), (5,)], [True, True, True]),
    ("linear-no-outputs", Linear_Layer, torch_linear, [(3, 4), (4, 0), (0,)], [True, True, True]),
    ("linear-no-rows", Linear_Layer, torch_linear, [(2, 0, 4), (4, 3), (3,)], [True, True, True]),
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


def make_inputs(shapes, requires, dtype, device, seed=0, strided=False):
    """Random inputs; ``strided`` gives each a non-contiguous layout (every other element)."""
    g = torch.Generator().manual_seed(seed)
    # Keep values away from ReLU's kink at 0, where gradcheck's finite differences are wrong.
    out = []
    for shape, req in zip(shapes, requires):
        wide = (*shape[:-1], 2 * shape[-1]) if strided and shape else shape
        t = torch.randn(wide, generator=g, dtype=torch.float64)
        t = torch.where(t.abs() < 0.05, t + 0.1, t).to(dtype=dtype, device=device)
        if strided and shape:
            t = t[..., ::2]
            assert t.numel() < 2 or not t.is_contiguous()
        out.append(t.requires_grad_(req))
    return out


def leaves(ts):
    return [t.detach().clone().requires_grad_(t.requires_grad) for t in ts]


def assert_same_grads(ours_in, ref_in, **tolerance):
    for a, b in zip(ours_in, ref_in):
        if b.grad is None:
            assert a.grad is None, "a gradient was computed for a tensor that needs none"
        else:
            assert a.grad.shape == b.grad.shape and a.grad.dtype == b.grad.dtype
            torch.testing.assert_close(a.grad, b.grad, equal_nan=True, **tolerance)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("strided", [False, True], ids=["contiguous", "strided"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name,fn,reference,shapes,requires", CASES, ids=IDS)
def test_matches_torch(name, fn, reference, shapes, requires, dtype, strided, device):
    ours_in = make_inputs(shapes, requires, dtype, device, strided=strided)
    ref_in = leaves(ours_in)
    ours, ref = fn.apply(*ours_in), reference(*ref_in)
    torch.testing.assert_close(ours, ref)
    grad = torch.randn(ref.shape, dtype=dtype, device=device)
    ours.backward(grad)
    ref.backward(grad)
    assert_same_grads(ours_in, ref_in)


@pytest.mark.parametrize("name,fn,reference,shapes,requires", CASES, ids=IDS)
def test_gradcheck_and_gradgradcheck(name, fn, reference, shapes, requires):
    inputs = make_inputs(shapes, requires, torch.float64, "cpu", seed=1)
    assert gradcheck(fn.apply, inputs)
    assert gradgradcheck(fn.apply, inputs)


# ------------------------------------------------------------------------------------------
# NaN, infinities, signed zeros, huge values: the gradients torch's own ops give, bit for bit
# in where the NaNs are.
# ------------------------------------------------------------------------------------------

SPECIAL = [float("nan"), float("inf"), -float("inf"), 0.0, -0.0, 1e30, -1e30, 3.0, -2.0, 1e-40]
GALLERY = [c for c in CASES if c[1] is not Linear_Layer]


@pytest.mark.parametrize("incoming", [1.0, float("nan"), float("inf"), 0.0])
@pytest.mark.parametrize("name,fn,reference,shapes,requires", GALLERY, ids=[c[0] for c in GALLERY])
def test_gallery_special_values(name, fn, reference, shapes, requires, incoming):
    slopes = [1.5, 0.0, float("inf"), float("nan")] if len(shapes) == 2 else [None]
    for slope in slopes:
        x = torch.tensor(SPECIAL, requires_grad=requires[0])
        ours_in = [x] + ([torch.tensor(slope, requires_grad=requires[1])] if slope is not None else [])
        ref_in = leaves(ours_in)
        ours, ref = fn.apply(*ours_in), reference(*ref_in)
        torch.testing.assert_close(ours, ref, equal_nan=True)
        ours.backward(torch.full_like(ours, incoming))
        ref.backward(torch.full_like(ref, incoming))
        assert_same_grads(ours_in, ref_in)


def test_relu_passes_the_gradient_at_nan_like_torch():
    x = torch.tensor([float("nan"), -1.0, 2.0], requires_grad=True)
    ReLU.apply(x).backward(torch.tensor([5.0, float("nan"), 7.0]))
    assert x.grad.tolist() == [5.0, 0.0, 7.0]  # NaN input passes; a masked NaN gradient is 0


def test_linear_special_values_match_f_linear():
    x = torch.tensor([[float("nan"), 1.0, 2.0], [float("inf"), -1.0, 0.0], [1e30, 1e30, -0.0]],
                     requires_grad=True)
    w = torch.tensor([[1.0, 0.0], [float("inf"), 2.0], [-1.0, 1e-30]], requires_grad=True)
    b = torch.tensor([0.5, -float("inf")], requires_grad=True)
    ours_in, ref_in = [x, w, b], leaves([x, w, b])
    ours, ref = Linear_Layer.apply(*ours_in), torch_linear(*ref_in)
    torch.testing.assert_close(ours, ref, equal_nan=True)
    g = torch.tensor([[1.0, float("nan")], [0.0, 1.0], [2.0, 3.0]])
    ours.backward(g)
    ref.backward(g)
    assert_same_grads(ours_in, ref_in)


# ------------------------------------------------------------------------------------------
# Transforms: vmap (and per-sample gradients), torch.compile, autocast.
# ------------------------------------------------------------------------------------------

BATCH = 3


@pytest.mark.parametrize("name,fn,reference,shapes,requires", CASES, ids=IDS)
def test_vmap_per_sample_matches_a_loop(name, fn, reference, shapes, requires):
    """vmap over the first input's rows, and per-sample gradients of every input needing one."""
    first, *rest = make_inputs([(BATCH, *shapes[0])] + shapes[1:], [False] * len(shapes),
                               torch.float64, "cpu")
    in_dims = (0,) + (None,) * len(rest)
    looped = torch.stack([fn.apply(row, *rest) for row in first])
    torch.testing.assert_close(vmap(fn.apply, in_dims=in_dims)(first, *rest), looped)
    argnums = tuple(i for i, r in enumerate(requires) if r)

    def loss(*args):
        return fn.apply(*args).square().sum()

    per_sample = vmap(grad(loss, argnums=argnums), in_dims=in_dims)(first, *rest)
    for k, row in enumerate(first):
        args = [t.clone().requires_grad_(i in argnums) for i, t in enumerate([row, *rest])]
        expected = torch.autograd.grad(loss(*args), [args[i] for i in argnums])
        for got, want in zip(per_sample, expected):
            torch.testing.assert_close(got[k], want)


def test_jacobian_of_the_layer_with_respect_to_its_input_is_w_transposed():
    w = torch.randn(5, 3, dtype=torch.float64)
    b = torch.randn(3, dtype=torch.float64)
    jacobian = torch.func.jacrev(Linear_Layer.apply)(torch.randn(5, dtype=torch.float64), w, b)
    assert torch.equal(jacobian, w.t())


def test_old_style_function_is_refused_by_vmap():
    """The reason for setup_context: the old forward(ctx, ...) style cannot be transformed."""

    class OldSquare(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x * x

        @staticmethod
        def backward(ctx, grad_output):
            (x,) = ctx.saved_tensors
            return 2 * x * grad_output

    with pytest.raises(RuntimeError, match="setup_context"):
        vmap(OldSquare.apply)(torch.randn(3, 2))
    torch.testing.assert_close(vmap(Square.apply)(torch.arange(3.0)), torch.tensor([0.0, 1, 4]))


# One case per Function, plus the zero-size and partial-gradient corners (compiling takes time).
COMPILED = ["linear-3d", "linear-no-features", "linear-only-weight", "square", "cube", "exp",
            "relu", "sigmoid", "tanh", "silu-feature-slope"]


def test_compiled_fullgraph_matches_native():
    """Every case of the table in one compiled function: no graph break (fullgraph=True).

    The ``aot_eager`` backend runs Dynamo and AOTAutograd (where graph breaks and autograd
    Functions are handled) but skips Inductor's code generation, which takes long on a small
    CPU; tests/test_layers.py compiles the course model with the default backend.
    """
    cases = [c for c in CASES if c[0] in COMPILED]
    functions = [c[1] for c in cases]
    inputs = [make_inputs(c[3], c[4], torch.float64, "cpu", seed=2) for c in cases]
    ref_inputs = [leaves(ins) for ins in inputs]

    def run_all(all_inputs):
        return [fn.apply(*ins) for fn, ins in zip(functions, all_inputs)]

    torch._dynamo.reset()
    ours = torch.compile(run_all, fullgraph=True, backend="aot_eager")(inputs)
    refs = [c[2](*ins) for c, ins in zip(cases, ref_inputs)]
    grads = [torch.randn(r.shape, dtype=r.dtype) for r in refs]
    torch.autograd.backward(ours, grads)
    torch.autograd.backward(refs, grads)
    for o, r, ins, ref_ins in zip(ours, refs, inputs, ref_inputs):
        torch.testing.assert_close(o, r)
        assert_same_grads(ins, ref_ins)


AUTOCAST = [("cpu", torch.bfloat16),
            pytest.param("cuda", torch.float16, marks=[pytest.mark.cuda, CUDA]),
            pytest.param("cuda", torch.bfloat16, marks=[pytest.mark.cuda, CUDA])]


@pytest.mark.parametrize("device,low", AUTOCAST, ids=["cpu-bf16", "cuda-fp16", "cuda-bf16"])
@pytest.mark.parametrize("name,fn,reference,shapes,requires", GALLERY, ids=[c[0] for c in GALLERY])
def test_autocast_matches_native(name, fn, reference, shapes, requires, device, low):
    """Same output dtype and values as the native op; float32 gradients for float32 inputs.

    (The Linear layer under autocast is a production concern: tests/test_fast.py.)
    """
    ours_in = make_inputs(shapes, requires, torch.float32, device)
    ref_in = leaves(ours_in)
    with torch.autocast(device, dtype=low):
        ours, ref = fn.apply(*ours_in), reference(*ref_in)
    assert ours.dtype == ref.dtype
    torch.testing.assert_close(ours, ref)
    grad = torch.randn(ref.shape, dtype=ref.dtype, device=device)
    ours.backward(grad)
    ref.backward(grad)
    assert_same_grads(ours_in, ref_in)  # dtypes too: float32, like the parameters


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
    gi, gw, gb = linear_backward(g, x, w, (False, True, False))
    assert gi is None and gb is None
    torch.testing.assert_close(gw, x.t() @ g)
    gi, gw, gb = linear_backward(g, x, w, (True, False))  # apply(input, weight): two flags, no bias
    assert gw is None and gb is None
    torch.testing.assert_close(gi, g @ w.t())
    gi, gw, gb = linear_backward(g, x, w)  # every gradient by default
    torch.testing.assert_close((gi, gw, gb), (g @ w.t(), x.t() @ g, g.sum(0)))


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
    lead=st.lists(st.integers(0, 4), min_size=0, max_size=3),
    in_f=st.integers(0, 7),
    out_f=st.integers(0, 7),
    bias=st.booleans(),
    col_major=st.booleans(),
)
def test_linear_random_shapes(lead, in_f, out_f, bias, col_major):
    """Any leading dimensions, zero-size ones included, as F.linear accepts them."""
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
        assert a.grad.shape == r.grad.shape
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


def test_learned_silu_0d_input_with_a_bad_slope_gets_the_message():
    """A 0-D x has no feature dimension: the message offers a scalar slope only."""
    with pytest.raises(ValueError, match=r"slope of shape \(3,\) does not broadcast to x of shape "
                                         r"\(\); use a scalar slope \(shape \(\)\)$"):
        LearnedSiLU.apply(torch.tensor(1.0), torch.ones(3))
    torch.testing.assert_close(LearnedSiLU.apply(torch.tensor(1.0), torch.tensor(2.0)),
                               2 * F.silu(torch.tensor(1.0)))


# ------------------------------------------------------------------------------------------
# Batched gradients: every Function of the course under gradcheck / gradgradcheck with
# check_batched_grad=True (autograd's vmap over backward) and under a vectorized jacobian,
# which must equal the native op's. One table: (case id, ours, native oracle, shapes, order).
# ------------------------------------------------------------------------------------------

LINEAR_FUNCTIONS = [("plain", Linear_Layer.apply), ("fast", FastLinear.apply),
                    ("fast-eager", fast.linear), ("op", torch.ops.course_lib.linear)]
LINEAR_SHAPES = [("2d", [(4, 5), (5, 3), (3,)]), ("1d", [(5,), (5, 3), (3,)]),
                 ("3d", [(2, 3, 5), (5, 3), (3,)]), ("3d-nobias", [(2, 3, 5), (5, 3)]),
                 ("no-rows", [(0, 5), (5, 3), (3,)]), ("no-features", [(3, 0), (0, 4), (4,)]),
                 ("no-outputs", [(2, 3, 4), (4, 0), (0,)])]
ELEMENTWISE = [("square", Square.apply, torch.square), ("cube", Cube.apply, lambda x: x.pow(3)),
               ("exp", Exp.apply, torch.exp), ("relu", ReLU.apply, torch.relu),
               ("sigmoid", Sigmoid.apply, torch.sigmoid), ("tanh", Tanh.apply, torch.tanh),
               ("silu", LearnedSiLU.apply, lambda x, a: a * F.silu(x))]
# A row-major weight with contiguous inputs, and a column-major weight (layers.Linear's) with
# non-contiguous ones (every other element): both orders, both layouts, in half the cases.
LAYOUTS = [("row", False), ("column", True)]
BATCHED = (
    [(f"{f}-{s}-{order}", fn, torch_linear, shapes, order, strided)
     for f, fn in LINEAR_FUNCTIONS for s, shapes in LINEAR_SHAPES for order, strided in LAYOUTS]
    + [(f"{n}-{s}", fn, ref, [shape] + ([(shape[-1],)] if n == "silu" else []), "row", strided)
       for n, fn, ref in ELEMENTWISE for s, shape, strided in [("2d", (3, 4), True),
                                                              ("empty", (0, 4), False)]]
)
BATCHED_IDS = [c[0] for c in BATCHED]


def batched_inputs(shapes, order, strided, seed=3):
    """float64 leaves needing gradients; the weight in ``order``; ``strided``: non-contiguous."""
    ins = make_inputs(shapes, [True] * len(shapes), torch.float64, "cpu", seed, strided)
    if order == "column":
        ins[1] = column_major(ins[1].detach()).requires_grad_()
    return ins


@pytest.mark.parametrize("name,fn,reference,shapes,order,strided", BATCHED, ids=BATCHED_IDS)
def test_batched_gradcheck_and_gradgradcheck(name, fn, reference, shapes, order, strided):
    inputs = batched_inputs(shapes, order, strided)
    assert gradcheck(fn, inputs, check_batched_grad=True)
    assert gradgradcheck(fn, inputs, check_batched_grad=True)


# torch's jacobian(vectorize=True) itself fails on an empty output (it indexes grad[0]).
NONEMPTY = [c for c in BATCHED if not c[0].endswith(("-empty", "-no-rows-row", "-no-rows-column",
                                                     "-no-outputs-row", "-no-outputs-column"))]


@pytest.mark.parametrize("name,fn,reference,shapes,order,strided", NONEMPTY,
                         ids=[c[0] for c in NONEMPTY])
def test_vectorized_jacobian_equals_the_native_ops(name, fn, reference, shapes, order, strided):
    """``jacobian(vectorize=True)`` (vmap over the backward) against the native op's jacobian."""
    inputs = tuple(t.detach() for t in batched_inputs(shapes, order, strided))
    ours = torch.autograd.functional.jacobian(fn, inputs, vectorize=True)
    native = torch.autograd.functional.jacobian(reference, inputs, vectorize=True)
    assert len(ours) == len(inputs)
    for a, b in zip(ours, native):
        torch.testing.assert_close(a, b)
