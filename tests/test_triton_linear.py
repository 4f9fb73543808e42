"""course_lib.triton_linear: each kernel against lesson 2's formulas and autograd on F.linear.

Without CUDA the kernels run under Triton's CPU interpreter, set up by tests/triton_interpreter.py
for each test only; with CUDA the same tests run compiled kernels on the GPU. Shapes are small
because the interpreter runs each program in NumPy. Skipped only where Triton is not installed.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from triton_interpreter import CUDA, DEVICE, interpreter  # noqa: F401  (the fixture: Triton in the interpreter)

from course_lib import triton_linear as tlin  # noqa: E402
from course_lib.layers import Linear  # noqa: E402
from course_lib.triton_linear import (  # noqa: E402
    Tiles,
    TritonLinear,
    TritonLinearFunction,
    TritonUnavailable,
    grad_bias,
    grad_input,
    grad_weight,
    linear_forward,
)

ROOT = Path(__file__).resolve().parents[1]
BATCHES = (0, 1, 7, 130)  # empty, one row, ragged, more than two 64-row tiles with a ragged last one
N_IN, N_OUT = 20, 12  # neither a multiple of the tile: the K and N masks matter too
FLOAT32 = {"rtol": 1e-5, "atol": 1e-5}  # float32 sums of 20 products, in another order than BLAS


def tensors(B, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    X, W, b, G = (torch.randn(*s, generator=g, dtype=dtype).to(DEVICE)
                  for s in ((B, N_IN), (N_IN, N_OUT), (N_OUT,), (B, N_OUT)))
    return X, W, b, G


def autograd_reference(X, W, b, G, relu=False):
    """The three gradients PyTorch's own autograd gives for F.linear (weight (n_out, n_in))."""
    X, Wt, b = (t.detach().clone().requires_grad_() for t in (X, W.T, b))
    Y = F.linear(X, Wt, b)
    (F.relu(Y) if relu else Y).backward(G)
    return X.grad, Wt.grad.T, b.grad


@pytest.mark.parametrize("B", BATCHES)
def test_forward_is_x_w_plus_b_and_f_linear(B):
    X, W, b, _ = tensors(B)
    Y = linear_forward(X, W, b)
    torch.testing.assert_close(Y, X @ W + b, **FLOAT32)
    torch.testing.assert_close(Y, F.linear(X, W.T, b), **FLOAT32)
    assert Y.shape == (B, N_OUT) and Y.dtype == torch.float32


@pytest.mark.parametrize("B", BATCHES)
def test_each_backward_kernel_is_its_lesson_2_formula_and_autograds_gradient(B):
    X, W, b, G = tensors(B)
    ours = grad_input(G, W), grad_weight(X, G), grad_bias(G)
    formulas = G @ W.T, X.T @ G, G.sum(0)
    for name, got, formula, auto in zip(("grad_input", "grad_weight", "grad_bias"), ours, formulas,
                                        autograd_reference(X, W, b, G)):
        assert got.shape == formula.shape, name
        torch.testing.assert_close(got, formula, **FLOAT32, msg=lambda m, n=name: f"{n}: {m}")
        torch.testing.assert_close(got, auto, **FLOAT32, msg=lambda m, n=name: f"{n}: {m}")


def test_zero_size_batch_gives_zero_weight_and_bias_gradients():
    X, W, b, G = tensors(0)
    assert torch.equal(grad_weight(X, G), torch.zeros(N_IN, N_OUT, device=DEVICE))
    assert torch.equal(grad_bias(G), torch.zeros(N_OUT, device=DEVICE))


@pytest.mark.parametrize("B", (1, 7, 130))
def test_fused_relu_forward_and_backward(B):
    X, W, b, G = tensors(B, seed=1)
    Y = linear_forward(X, W, b, relu=True)
    torch.testing.assert_close(Y, F.relu(X @ W + b), **FLOAT32)
    assert (Y == 0).any() and (Y > 0).any()  # both sides of the kink are exercised
    leaves = [t.clone().requires_grad_() for t in (X, W, b)]
    TritonLinearFunction.apply(*leaves, True).backward(G)
    for leaf, expected in zip(leaves, autograd_reference(X, W, b, G, relu=True)):
        torch.testing.assert_close(leaf.grad, expected, **FLOAT32)


def test_non_contiguous_inputs_are_read_through_their_strides():
    X, W, b, G = tensors(130, seed=2)
    X_cols = X.T.contiguous().T            # column-major
    W_lin = W.T.contiguous().T             # course_lib.layers.Linear's memory order
    X_step = torch.randn(260, N_IN, device=DEVICE)[::2]   # every other row
    G_bcast = torch.randn(1, N_OUT, device=DEVICE).expand(130, N_OUT)  # stride 0, as (Y * v).sum().backward() gives
    assert not (X_cols.is_contiguous() or W_lin.is_contiguous() or X_step.is_contiguous())
    torch.testing.assert_close(linear_forward(X_cols, W_lin, b), X @ W + b, **FLOAT32)
    torch.testing.assert_close(linear_forward(X_step, W, b), X_step @ W + b, **FLOAT32)
    torch.testing.assert_close(grad_weight(X_step, G_bcast), X_step.T @ G_bcast, **FLOAT32)
    torch.testing.assert_close(grad_bias(G_bcast), G_bcast.sum(0), **FLOAT32)
    torch.testing.assert_close(grad_input(G_bcast, W_lin), G_bcast @ W.T, **FLOAT32)


@pytest.mark.parametrize("relu", (False, True))
def test_gradcheck_in_float64(relu):
    """The interpreter runs float64 (NumPy), so gradcheck gets its usual precision.
    fast_mode: a few random directions instead of one forward per input element."""
    X, W, b, _ = tensors(7, dtype=torch.float64, seed=3)
    X = torch.where((X @ W + b).abs().amin(1, keepdim=True) < 0.1, X + 0.3, X)  # away from ReLU's kink
    inputs = [t.requires_grad_() for t in (X, W, b)]
    assert torch.autograd.gradcheck(lambda *t: TritonLinearFunction.apply(*t, relu), inputs,
                                    fast_mode=True)


def test_only_the_gradients_asked_for_are_computed_and_double_backward_refuses():
    X, W, b, G = tensors(7)
    W.requires_grad_()
    Y = TritonLinearFunction.apply(X, W, None)
    Y.backward(G)
    torch.testing.assert_close(W.grad, X.T @ G, **FLOAT32)
    assert X.grad is None
    Wg = W.detach().requires_grad_()
    (gw,) = torch.autograd.grad(TritonLinearFunction.apply(X, Wg, None).sum(), Wg, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|does not require grad|twice"):
        gw.sum().backward()


def test_module_copies_a_course_linear_and_computes_what_it_computes():
    torch.manual_seed(0)
    layer = Linear(N_IN, N_OUT, device=DEVICE)
    ours = TritonLinear.from_linear(layer, relu=True)
    assert ours.weight.stride() == layer.weight.stride() and "relu=True" in repr(ours)
    X = torch.randn(7, N_IN, device=DEVICE)
    torch.testing.assert_close(ours(X), F.relu(layer(X)), **FLOAT32)


def test_bad_shapes_and_tiles_are_named():
    X, W, b, _ = tensors(7)
    with pytest.raises(ValueError, match=r"X has 19 features, W expects 20"):
        linear_forward(X[:, :19], W, b)
    with pytest.raises(ValueError, match=r"b has shape \(11,\), expected \(12,\)"):
        linear_forward(X, W, b[:11])
    with pytest.raises(ValueError, match=r"BLOCK_K must be a power of two >= 16, got 48"):
        Tiles(BLOCK_K=48)


@pytest.mark.skipif(CUDA, reason="this machine has CUDA")
def test_triton_imported_in_the_other_mode_is_named(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET")  # this process imported Triton with the interpreter on
    with pytest.raises(TritonUnavailable, match="imported while TRITON_INTERPRET was set"):
        linear_forward(*tensors(7)[:3])


@pytest.mark.skipif(CUDA, reason="this machine has CUDA")
def test_imports_without_triton_or_gpu_and_a_launch_says_why_and_how_to_run():
    """One fresh process: first without Triton, then with it but with neither GPU nor interpreter."""
    code = ("import sys; sys.modules['triton'] = None\n"
            "import torch, course_lib.triton_linear as t, course_lib.checks.triton\n"
            "def launch():\n"
            "    try:\n        t.linear_forward(torch.ones(2, 3), torch.ones(3, 4))\n"
            "    except t.TritonUnavailable as e:\n        print(e)\n"
            "launch()\n"
            "del sys.modules['triton']\n"
            "launch()\n")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-c", code], env={**env, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    without_triton, without_gpu = done.stdout.splitlines()
    assert "needs Triton, which is not installed here" in without_triton
    assert tlin.TRITON_PIN in without_triton
    assert "no CUDA device here" in without_gpu and "TRITON_INTERPRET=1" in without_gpu
