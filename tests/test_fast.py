"""``course_lib.fast``: the production Linear Function gives the plain ``Linear_Layer``'s numbers,
and each of its additions (autocast, memory order, fused addmm, cheap validation, saving only
what is needed, the eager path without signature binding) does what it says."""

import pytest
import torch
import torch.nn.functional as F
from test_functions import (
    AUTOCAST,
    BAD_LINEAR,
    CASES,
    OpLog,
    assert_same_grads,
    column_major,
    leaves,
    make_inputs,
    torch_linear,
)
from torch.autograd import gradcheck, gradgradcheck
from torch.func import grad, vmap

from course_lib import fast
from course_lib.fast import FastLinear
from course_lib.functions import Linear_Layer

LINEAR = [c for c in CASES if c[1] is Linear_Layer]  # (id, Function, oracle, shapes, requires)
FAST = [("FastLinear.apply", FastLinear.apply), ("fast.linear", fast.linear)]


@pytest.mark.parametrize("variant,fast_fn", FAST, ids=[f[0] for f in FAST])
@pytest.mark.parametrize("order", ["row", "column"])
@pytest.mark.parametrize("strided", [False, True], ids=["contiguous", "strided"])
@pytest.mark.parametrize("name,fn,reference,shapes,requires", LINEAR, ids=[c[0] for c in LINEAR])
def test_fast_gives_the_plain_functions_numbers(name, fn, reference, shapes, requires, strided,
                                                order, variant, fast_fn):
    """Values and every gradient, float64: 1-D to 4-D inputs, zero-size, non-contiguous."""
    plain_in = make_inputs(shapes, requires, torch.float64, "cpu", strided=strided)
    if order == "column":
        plain_in[1] = column_major(plain_in[1].detach()).requires_grad_(requires[1])
    fast_in = leaves(plain_in)
    plain, ours = Linear_Layer.apply(*plain_in), fast_fn(*fast_in)
    torch.testing.assert_close(ours, plain, rtol=1e-12, atol=1e-12)
    g = torch.randn(plain.shape, dtype=torch.float64)
    plain.backward(g)
    ours.backward(g)
    assert_same_grads(fast_in, plain_in, rtol=1e-12, atol=1e-12)


def test_layers_linear_runs_the_eager_path_and_transforms_run_fast_linear():
    x, w, b = torch.randn(4, 5), torch.randn(5, 3, requires_grad=True), torch.randn(3)
    assert type(fast.linear(x, w, b).grad_fn).__name__ == "_EagerLinearBackward"
    assert type(FastLinear.apply(x, w, b).grad_fn).__name__ == "FastLinearBackward"
    # under vmap (a torch.func transform) the eager Function would be refused: FastLinear runs
    torch.testing.assert_close(vmap(fast.linear, in_dims=(0, None, None))(x, w, b), x @ w + b)
    per_sample = vmap(grad(lambda w, x: fast.linear(x, w, b).sum()), in_dims=(None, 0))(w, x)
    torch.testing.assert_close(per_sample, x[:, :, None].expand(4, 5, 3))


def test_compiles_without_graph_break():
    torch._dynamo.reset()
    x = torch.randn(4, 5, dtype=torch.float64)
    w = column_major(torch.randn(5, 3, dtype=torch.float64)).requires_grad_()
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    compiled = torch.compile(fast.linear, fullgraph=True, backend="aot_eager")
    out = compiled(x, w, b)
    torch.testing.assert_close(out, torch_linear(x, w, b))
    out.sum().backward()
    torch.testing.assert_close(w.grad, x.t() @ torch.ones(4, 3, dtype=torch.float64))


# ----- 1. autocast: F.linear under the same autocast is the oracle -------------------------------


@pytest.mark.parametrize("variant,fast_fn", FAST, ids=[f[0] for f in FAST])
@pytest.mark.parametrize("device,low", AUTOCAST, ids=["cpu-bf16", "cuda-fp16", "cuda-bf16"])
@pytest.mark.parametrize("name,fn,reference,shapes,requires", LINEAR, ids=[c[0] for c in LINEAR])
def test_autocast_matches_f_linear(name, fn, reference, shapes, requires, device, low, variant,
                                   fast_fn):
    """Output in the autocast dtype, equal to F.linear's; float32 gradients for float32 inputs."""
    ours_in = make_inputs(shapes, requires, torch.float32, device)
    ref_in = leaves(ours_in)
    with torch.autocast(device, dtype=low):
        ours, ref = fast_fn(*ours_in), reference(*ref_in)
    assert ours.dtype == ref.dtype
    if ours.numel():
        assert ours.dtype == low
    torch.testing.assert_close(ours, ref)
    g = torch.randn(ref.shape, dtype=ref.dtype, device=device)
    ours.backward(g)
    ref.backward(g)
    assert_same_grads(ours_in, ref_in)  # dtypes too: float32, like the parameters


def test_autocast_leaves_float64_alone():
    x, w = torch.randn(3, 4, dtype=torch.float64), torch.randn(4, 2, dtype=torch.float64)
    with torch.autocast("cpu"):
        assert fast.linear(x, w).dtype == torch.float64


# ----- 2. memory order -------------------------------------------------------------------------


@pytest.mark.parametrize("fast_fn", [f[1] for f in FAST], ids=[f[0] for f in FAST])
def test_column_major_weight_gets_its_gradient_in_its_own_layout(fast_fn):
    x = torch.randn(6, 5)
    w = column_major(torch.randn(5, 3)).requires_grad_()
    fast_fn(x, w, torch.randn(3)).sum().backward()
    assert w.grad.stride() == w.stride() == (1, 5)
    torch.testing.assert_close(w.grad, x.t() @ torch.ones(6, 3))
    w2 = torch.randn(5, 3, requires_grad=True)  # row-major weight: row-major gradient
    fast_fn(x, w2).sum().backward()
    assert w2.grad.stride() == (3, 1)


def test_column_major_gradcheck():
    x = torch.randn(2, 4, 5, dtype=torch.float64, requires_grad=True)
    w = column_major(torch.randn(5, 3, dtype=torch.float64)).requires_grad_()
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    assert gradcheck(FastLinear.apply, (x, w, b))
    assert gradgradcheck(FastLinear.apply, (x, w, b))


# ----- 3. one fused call ---------------------------------------------------------------------------


@pytest.mark.parametrize("shape,fused", [((4, 5), True), ((2, 3, 5), True), ((5,), False)])
def test_rows_and_a_bias_run_one_addmm(shape, fused):
    x, w, b = torch.randn(shape), torch.randn(5, 3), torch.randn(3)
    with OpLog() as log:
        out = fast.linear(x, w, b)
    assert ("addmm" in log.names) == fused, log.names
    torch.testing.assert_close(out, torch_linear(x, w, b))


# ----- 4. cheap validation, the same clear errors ---------------------------------------------------


@pytest.mark.parametrize("fast_fn", [f[1] for f in FAST], ids=[f[0] for f in FAST])
@pytest.mark.parametrize("case,make,error,phrases", BAD_LINEAR, ids=[c[0] for c in BAD_LINEAR])
def test_bad_input_messages(case, make, error, phrases, fast_fn):
    x, w, b = make()
    with pytest.raises(error) as info:
        fast_fn(x, w, b)
    message = str(info.value)
    assert message.startswith("FastLinear:")
    for phrase in phrases:
        assert phrase in message, f"{phrase!r} not in {message!r}"


# ----- saved only if needed, as the plain one ------------------------------------------------------------------------


@pytest.mark.parametrize("fast_fn", [f[1] for f in FAST], ids=[f[0] for f in FAST])
def test_saves_only_what_backward_needs(fast_fn):
    x = torch.randn(4, 5)  # data: needs no gradient
    w = torch.randn(5, 3, requires_grad=True)
    saved_input, saved_weight = fast_fn(x, w, None).grad_fn.saved_tensors
    assert saved_weight is None and torch.equal(saved_input, x)  # dL/dx is not needed
    saved_input, saved_weight = fast_fn(x.requires_grad_(), w.detach(), None).grad_fn.saved_tensors
    assert saved_input is None and saved_weight is not None


@pytest.mark.parametrize("layout", ["column-major", "row-major"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("leading", [(4,), (2, 3), ()])
@pytest.mark.parametrize("needs", [(True, True, True), (False, True, True), (True, False, False),
                                   (False, False, True)])
def test_eager_function_is_fast_linear_bit_for_bit(layout, bias, leading, needs):
    """``fast.linear``'s inline common path and ``FastLinear``'s helpers: the same numbers, the
    same gradients (and the same None where none is needed), in every case either one takes."""
    torch.manual_seed(0)
    w = torch.randn(3, 5).t() if layout == "column-major" else torch.randn(5, 3)  # (5, 3)
    results = []
    for fn in (fast.linear, FastLinear.apply):
        x = torch.randn(*leading, 5, generator=torch.Generator().manual_seed(1))
        ww = w.detach().clone() if layout == "row-major" else w.detach().t().clone().t()
        b = torch.arange(3.0) if bias else None
        for t, need in zip((x, ww, b), needs):
            if t is not None:
                t.requires_grad_(need)
        out = fn(x, ww, b)
        wanted = [t for t in (x, ww, b) if t is not None and t.requires_grad]
        # autograd.grad returns what backward returned (no accumulation into .grad, which would
        # copy it into the parameter's layout): its strides show grad_weight's memory order.
        grad_out = torch.linspace(-1, 1, out.numel()).view_as(out)
        grads = torch.autograd.grad(out, wanted, grad_out) if wanted else ()
        results.append((out.detach(), [(g, g.stride()) for g in grads]))
    (out1, grads1), (out2, grads2) = results
    assert torch.equal(out1, out2) and len(grads1) == len(grads2)
    for (g1, stride1), (g2, stride2) in zip(grads1, grads2):
        assert torch.equal(g1, g2) and stride1 == stride2  # grad_weight in the weight's own order


def test_eager_function_gradients_are_right():
    """The inline path (2-D input, a bias) and the general one, against finite differences."""
    for leading in [(4,), (2, 3)]:
        x = torch.randn(*leading, 5, dtype=torch.float64, requires_grad=True)
        w = torch.randn(3, 5, dtype=torch.float64).t().requires_grad_()
        b = torch.randn(3, dtype=torch.float64, requires_grad=True)
        assert gradcheck(fast.linear, (x, w, b))
        assert gradgradcheck(fast.linear, (x, w, b))
        assert gradcheck(fast.linear, (x, w, None))
    torch.testing.assert_close(fast.linear(x, w), F.linear(x, w.t()))


