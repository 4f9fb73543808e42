"""The Linear layer as Triton kernels: ``Y = X W + b`` and its three gradients, tile by tile.

Notation of the lessons: ``X (B, n_in)``, ``W (n_in, n_out)``, ``b (n_out,)``, ``Y = X W + b``,
``G = dL/dY``. One tiled matrix-multiplication kernel, ``matmul_kernel``, computes all three
products (each operand is read through its strides, so a transpose is free)::

    forward      Y          = X   W   + b   (then ReLU when ``relu=True``)   (B, n_in) @ (n_in, n_out)
    backward     grad_input = G   W^T                                       (B, n_out) @ (n_out, n_in)
                 grad_weight= X^T G                                         (n_in, B) @ (B, n_out)

and ``grad_bias_kernel`` sums ``G`` over the batch (a reduction). ``TritonLinearFunction`` wraps
them as an autograd Function, ``TritonLinear`` as a module (``course_lib.layers.Linear``'s
parameters, initialisation and memory order).

Where the kernels run: on a CUDA GPU, or on the CPU under Triton's interpreter, which executes each
program with NumPy. The interpreter is chosen by the environment variable ``TRITON_INTERPRET=1``,
and Triton reads it when ``triton`` is imported (its own library kernels, ``tl.zeros`` and
``tl.sum`` among them, are decorated then): set it before anything imports triton, with
``TRITON_INTERPRET=1 python script.py`` or ``os.environ["TRITON_INTERPRET"] = "1"`` first thing in
a notebook (the lesson's first cell does this when there is no CUDA). This module imports Triton
only at the first launch, so it imports cleanly without Triton and without a GPU; a launch that
cannot run says why and what to do (``TritonUnavailable``). Its kernels are plain functions,
decorated with ``triton.jit`` at their first launch (``jitted``).
"""

from __future__ import (
    annotations,  # kernel annotations ("tl.constexpr") stay strings: no Triton needed to import
)

import functools
import inspect
import os
from dataclasses import dataclass

import torch
from torch.autograd.function import once_differentiable

from .layers import Linear

# Triton is imported at the first launch (load_triton), not here: it decides between compiled and
# interpreted kernels when it is imported, and this module must import without it.
triton = tl = None

TRITON_PIN = "triton==3.8.0"  # the version torch 2.14.1 requires (pyproject.toml pins the same)


class TritonUnavailable(RuntimeError):
    """A kernel cannot run here: Triton is missing, or there is no GPU and no interpreter."""


@dataclass(frozen=True)
class Tiles:
    """The tile sizes of ``matmul_kernel``: each program computes a ``BLOCK_M x BLOCK_N`` tile of
    the output, stepping through the shared dimension ``BLOCK_K`` at a time. Powers of two, at
    least 16 (``tl.dot``'s smallest operand)."""

    BLOCK_M: int = 64
    BLOCK_N: int = 64
    BLOCK_K: int = 64

    def __post_init__(self):
        for name, value in vars(self).items():
            if not isinstance(value, int) or value < 16 or value & (value - 1):
                raise ValueError(f"Tiles: {name} must be a power of two >= 16, got {value!r}")


TILES = Tiles()  # fits any GPU's fast memory in float32; few programs keep the interpreter quick


# --- The kernels: one program computes one tile -------------------------------------------------

def matmul_kernel(a_ptr, b_ptr, c_ptr, bias_ptr, M, N, K,
                  stride_am, stride_ak, stride_bk, stride_bn, stride_cm, stride_cn,
                  HAS_BIAS: tl.constexpr, RELU: tl.constexpr, ACC_DTYPE: tl.constexpr,
                  BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """C = A B (+ bias) (then ReLU): A (M, K), B (K, N), C (M, N); program (i, j) writes tile (i, j)."""
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)  # this program's rows of C
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)  # and columns
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC_DTYPE)
    for k0 in range(0, K, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        # The masks keep every load inside A and B when M, N or K is not a multiple of the tile.
        a = tl.load(a_ptr + rows[:, None] * stride_am + ks[None, :] * stride_ak,
                    mask=(rows[:, None] < M) & (ks[None, :] < K), other=0.0)
        b = tl.load(b_ptr + ks[:, None] * stride_bk + cols[None, :] * stride_bn,
                    mask=(ks[:, None] < K) & (cols[None, :] < N), other=0.0)
        acc = tl.dot(a, b, acc, input_precision="ieee")  # (BLOCK_M, BLOCK_K) @ (BLOCK_K, BLOCK_N)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + cols, mask=cols < N, other=0.0).to(ACC_DTYPE)[None, :]
    if RELU:
        acc = tl.maximum(acc, 0.0)
    tl.store(c_ptr + rows[:, None] * stride_cm + cols[None, :] * stride_cn,
             acc.to(c_ptr.dtype.element_ty), mask=(rows[:, None] < M) & (cols[None, :] < N))


def grad_bias_kernel(g_ptr, out_ptr, B, N, stride_gb, stride_gn, ACC_DTYPE: tl.constexpr,
                     BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr):
    """out = sum over the batch of G (B, N): program j sums columns j*BLOCK_N ... of every row."""
    cols = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    acc = tl.zeros((BLOCK_N,), dtype=ACC_DTYPE)
    for b0 in range(0, B, BLOCK_B):
        rows = b0 + tl.arange(0, BLOCK_B)
        g = tl.load(g_ptr + rows[:, None] * stride_gb + cols[None, :] * stride_gn,
                    mask=(rows[:, None] < B) & (cols[None, :] < N), other=0.0)
        acc += tl.sum(g.to(ACC_DTYPE), axis=0)
    tl.store(out_ptr + cols, acc.to(out_ptr.dtype.element_ty), mask=cols < N)


# --- Launching them ------------------------------------------------------------------------------

def interpreting() -> bool:
    """Whether Triton runs kernels under its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def load_triton():
    """Import Triton (once) into this module; raise ``TritonUnavailable`` when it cannot serve the
    current mode: not installed, or imported earlier in the other mode than TRITON_INTERPRET asks."""
    global triton, tl
    if triton is None:
        try:
            import triton as triton_module
            import triton.language as language
        except ImportError as error:  # Triton ships with torch's Linux wheels only
            raise TritonUnavailable(
                f"course_lib.triton_linear needs Triton, which is not installed here "
                f"({type(error).__name__}: {error}). It comes with torch's Linux wheels; "
                f"elsewhere on Linux `pip install {TRITON_PIN}`.") from None
        triton, tl = triton_module, language
    # tl.zeros is one of Triton's own kernels, decorated when triton.language was imported.
    imported_interpreted = type(tl.zeros).__name__ == "InterpretedFunction"
    if imported_interpreted != interpreting():
        mode = "set" if imported_interpreted else "not set"
        raise TritonUnavailable(
            f"Triton was imported while TRITON_INTERPRET was {mode}, and Triton reads it at import: "
            "set TRITON_INTERPRET=1 before anything imports triton (first thing in the script or "
            "notebook, or `TRITON_INTERPRET=1 python ...`), then restart the Python process.")
    return triton


def require_triton(*tensors) -> None:
    """Raise ``TritonUnavailable``, saying which and what to do, unless a kernel can run on ``tensors``."""
    load_triton()
    if interpreting():
        return
    on_cpu = [t.device.type for t in tensors if t.device.type != "cuda"]
    if not torch.cuda.is_available():
        raise TritonUnavailable(
            "Triton compiles kernels for a GPU and there is no CUDA device here (torch.cuda."
            "is_available() is False), and TRITON_INTERPRET is not set. To run the kernels on the "
            "CPU under Triton's interpreter, set TRITON_INTERPRET=1 before the first kernel call: "
            "`TRITON_INTERPRET=1 python ...`, or os.environ['TRITON_INTERPRET'] = '1' first thing "
            "in a notebook.")
    if on_cpu:
        raise TritonUnavailable(
            f"the tensors are on {on_cpu[0]}, but compiled Triton kernels read GPU memory: move them "
            "to cuda (tensor.to('cuda')), or set TRITON_INTERPRET=1 to use the interpreter")


@functools.cache
def _jitted(kernel, interpret: bool):
    """``triton.jit(kernel)``, decorated at first use so that TRITON_INTERPRET set late still counts."""
    return triton.jit(kernel)


def jitted(kernel):
    """The launchable version of ``kernel``: a plain function (this module's, or yours) is
    decorated now; one already decorated with ``@triton.jit`` is returned as it is."""
    if not inspect.isfunction(kernel):
        return kernel
    return _jitted(kernel, interpreting())


def _accumulator(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32  # float16 inputs add up in float32


def matmul(a, b, bias=None, relu: bool = False, out=None):
    """``a @ b (+ bias)`` (then ReLU) with ``matmul_kernel``: a (M, K), b (K, N) -> (M, N).

    ``a`` and ``b`` may be any strided views (``x.T`` costs nothing); ``out`` receives the result
    when given (any memory order), else a new contiguous tensor.
    """
    require_triton(a, b)
    (M, K), N = a.shape, b.shape[1]
    out = torch.empty(M, N, dtype=a.dtype, device=a.device) if out is None else out
    if out.numel() == 0:
        return out
    grid = (triton.cdiv(M, TILES.BLOCK_M), triton.cdiv(N, TILES.BLOCK_N))  # one program per tile of out
    jitted(matmul_kernel)[grid](
        a, b, out, bias if bias is not None else out, M, N, K, *a.stride(), *b.stride(), *out.stride(),
        HAS_BIAS=bias is not None, RELU=relu, ACC_DTYPE=_accumulator(a.dtype),
        BLOCK_M=TILES.BLOCK_M, BLOCK_N=TILES.BLOCK_N, BLOCK_K=TILES.BLOCK_K)
    return out


def grad_bias(G, kernel=None, block_b: int = 64, block_n: int = 64):
    """``G.sum(0)`` with a reduction kernel (``grad_bias_kernel``, or your own with its signature)."""
    require_triton(G)
    B, N = G.shape
    out = torch.empty(N, dtype=G.dtype, device=G.device)
    if N == 0:
        return out
    grid = (triton.cdiv(N, block_n),)  # one program per block of columns; each reads every row
    jitted(kernel or grad_bias_kernel)[grid](G, out, B, N, *G.stride(), ACC_DTYPE=_accumulator(G.dtype),
                                             BLOCK_B=block_b, BLOCK_N=block_n)
    return out


def _check_inputs(X, W, b) -> None:
    if X.dim() != 2 or W.dim() != 2:
        raise ValueError(f"triton linear: X must be (B, n_in) and W (n_in, n_out), got X "
                         f"{tuple(X.shape)} and W {tuple(W.shape)}")
    if X.shape[1] != W.shape[0]:
        raise ValueError(f"triton linear: X has {X.shape[1]} features, W expects {W.shape[0]} "
                         f"(W shape {tuple(W.shape)})")
    if b is not None and tuple(b.shape) != (W.shape[1],):
        raise ValueError(f"triton linear: b has shape {tuple(b.shape)}, expected ({W.shape[1]},)")
    dtypes = {t.dtype for t in (X, W, b) if t is not None}
    if len(dtypes) > 1:
        raise ValueError(f"triton linear: X, W and b must share one dtype, got {sorted(map(str, dtypes))}")


def linear_forward(X, W, b=None, relu: bool = False):
    """``Y = X W + b`` (then ReLU when ``relu``) in one kernel: X (B, n_in), W (n_in, n_out)."""
    _check_inputs(X, W, b)
    return matmul(X, W, bias=b, relu=relu)


def grad_input(G, W):
    """``grad_input = G W^T``: G (B, n_out), W (n_in, n_out) -> (B, n_in)."""
    return matmul(G, W.T)


def grad_weight(X, G):
    """``grad_weight = X^T G``: X (B, n_in), G (B, n_out) -> (n_in, n_out)."""
    return matmul(X.T, G)


class TritonLinearFunction(torch.autograd.Function):
    """``Y = X W + b`` (ReLU'd when ``relu``); ``dX = G W^T``, ``dW = X^T G``, ``db = sum_rows G``."""

    @staticmethod
    def forward(X, W, b=None, relu=False):
        return linear_forward(X, W, b, relu)

    @staticmethod
    def setup_context(ctx, inputs, output):
        X, W, b, relu = (tuple(inputs) + (None, False))[:4]
        ctx.relu, ctx.has_bias = relu, b is not None
        ctx.save_for_backward(X, W, output if relu else None)

    @staticmethod
    @once_differentiable  # the kernels build no graph: a second derivative must fail, not be wrong
    def backward(ctx, G):
        X, W, Y = ctx.saved_tensors
        if ctx.relu:
            G = G.masked_fill(Y <= 0, 0)  # ReLU's gradient: nothing flows where the output was clipped
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        return (grad_input(G, W) if need_x else None,
                grad_weight(X, G) if need_w else None,
                grad_bias(G) if need_b and ctx.has_bias else None,
                None)


class TritonLinear(Linear):
    """``course_lib.layers.Linear`` computed by Triton kernels; ``relu=True`` fuses a ReLU after it."""

    def __init__(self, in_features, out_features, bias=True, relu=False, device=None, dtype=None):
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.relu = relu

    def forward(self, input):
        return TritonLinearFunction.apply(input, self.weight, self.bias, self.relu)

    @classmethod
    def from_linear(cls, layer: Linear, relu: bool = False) -> "TritonLinear":
        """A ``TritonLinear`` with a copy of ``layer``'s parameters (same values, same memory order)."""
        new = cls(layer.in_features, layer.out_features, bias=layer.bias is not None, relu=relu,
                  device=layer.weight.device, dtype=layer.weight.dtype)
        with torch.no_grad():
            new.weight.copy_(layer.weight)
            if layer.bias is not None:
                new.bias.copy_(layer.bias)
        return new

    def extra_repr(self) -> str:
        return super().extra_repr() + (", relu=True" if self.relu else "")
