"""Checks for the exercises of lesson 12 (the Linear layer as Triton kernels).

The kernels run on a CUDA GPU, or on the CPU under Triton's interpreter (``TRITON_INTERPRET=1``,
see ``course_lib.triton_linear``). A kernel answer may be a plain function (it is decorated with
``triton.jit`` at launch) or already decorated; a kernel that still raises ``NotImplementedError``
gets a NOT ATTEMPTED report.
"""

from __future__ import annotations  # kernel annotations stay strings: importable without Triton

import inspect
import math

import torch

from .. import triton_linear
from ..triton_linear import TritonUnavailable, grad_bias, jitted, require_triton
from .exercise_runner import NotAttempted
from .report import TOLERANCE, Report

GRAD_BIAS_SHAPES = ((1, 12), (7, 12), (130, 70), (0, 5))  # (B, n_out): ragged, two column blocks, empty
MASK_BATCHES = (1, 7, 64, 128, 130)  # multiples of the 64-row tile pass even with a wrong row mask
MASK_BLOCK = 64
tl = None  # triton.language, set at the first launch: a kernel finds ``tl`` among its module's globals


def _stub(title: str, error: Exception):
    """A NOT ATTEMPTED report when ``error`` is the stub's NotImplementedError (raised directly, or
    wrapped by Triton's interpreter), else None."""
    if isinstance(error, NotImplementedError) or isinstance(error.__cause__, NotImplementedError):
        report = NotAttempted(title)
        report.add("stub", False, "the kernel still raises NotImplementedError: replace it with "
                                  "your code, then run this cell again.")
        return report
    return None


def _failure(report: Report, label: str, error: Exception) -> Report:
    if isinstance(error, TritonUnavailable):
        raise error  # not the student's fault: say how to run the kernels
    cause = error.__cause__ or error
    report.add(label, False, f"raised {type(cause).__name__}: {cause}")
    return report


def check_grad_bias_kernel(kernel, seed: int = 0) -> Report:
    """Check a ``grad_bias`` reduction kernel: ``out[j] = sum_i G[i, j]`` for ragged and empty batches.

    ``kernel`` has ``grad_bias_kernel``'s signature ``(g_ptr, out_ptr, B, N, stride_gb, stride_gn,
    ACC_DTYPE, BLOCK_B, BLOCK_N)``; it runs through ``course_lib.triton_linear.grad_bias`` with
    64 x 64 blocks, in float64, on ``G`` of shapes ``GRAD_BIAS_SHAPES`` (one of them transposed in
    memory), against ``G.sum(0)``.
    """
    title = "check_grad_bias_kernel"
    report, kernel = Report(title), inspect.unwrap(kernel)
    g = torch.Generator().manual_seed(seed)
    for i, (B, N) in enumerate(GRAD_BIAS_SHAPES):
        G = torch.randn(B, N, generator=g, dtype=torch.float64)
        if i == 2:
            G = G.T.contiguous().T  # same values, column-major: the strides must be used
        label = f"G of shape ({B}, {N})"
        try:
            got = grad_bias(G, kernel=kernel)
        except Exception as error:
            stub = _stub(title, error)
            return stub if stub is not None else _failure(report, label, error)
        expected = G.sum(0)
        if torch.allclose(got, expected, **TOLERANCE):
            report.add(label, True, f"equals G.sum(0) ({N} values)")
        else:
            bad = (~torch.isclose(got, expected, **TOLERANCE)).nonzero().flatten().tolist()
            report.add(label, False, f"wrong in columns {bad[:6]}{' ...' if len(bad) > 6 else ''}"
                                     f" of {N}: does every program add up every row, masking "
                                     f"rows >= B and columns >= N?")
    return report


# --- Exercise 2: the off-by-one mask ------------------------------------------------------------

def buggy_add_bias_kernel(y_ptr, b_ptr, M, N, stride_m, stride_n, BLOCK_M: tl.constexpr,
                          BLOCK_N: tl.constexpr):
    """Y += b in place, one BLOCK_M x BLOCK_N tile of Y (M, N) per program. It has a bug."""
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask = (rows[:, None] <= M) & (cols[None, :] < N)
    ptrs = y_ptr + rows[:, None] * stride_m + cols[None, :] * stride_n
    y = tl.load(ptrs, mask=mask, other=0.0)
    b = tl.load(b_ptr + cols, mask=cols < N, other=0.0)
    tl.store(ptrs, y + b[None, :], mask=mask)


def add_bias_in_place(kernel, Y, b, block: int = MASK_BLOCK):
    """Launch an add-bias kernel (``buggy_add_bias_kernel``'s signature) on ``Y`` (M, N) and ``b``."""
    global tl
    require_triton(Y, b)
    tl = triton_linear.tl
    M, N = Y.shape
    if Y.numel():
        grid = (math.ceil(M / block), math.ceil(N / block))
        jitted(kernel)[grid](Y, b, M, N, *Y.stride(), BLOCK_M=block, BLOCK_N=block)
    return Y


def check_row_mask_kernel(kernel, seed: int = 0) -> Report:
    """Check an add-bias kernel writes every row of ``Y`` and nothing past its last row.

    ``Y`` is a view of the first ``B`` rows of a larger buffer, so a write past row ``B - 1``
    lands in the buffer's spare rows (memory a real program could own) and is seen there.
    """
    title = "check_row_mask_kernel"
    report, kernel = Report(title), inspect.unwrap(kernel)
    g = torch.Generator().manual_seed(seed)
    for B in MASK_BATCHES:
        buffer = torch.zeros(B + MASK_BLOCK, 10, dtype=torch.float64)
        Y, b = buffer[:B], torch.randn(10, generator=g, dtype=torch.float64) + 2.0  # b is never 0
        label = f"B = {B}"
        try:
            add_bias_in_place(kernel, Y, b)
        except Exception as error:
            stub = _stub(title, error)
            return stub if stub is not None else _failure(report, label, error)
        spilled = buffer[B:].ne(0).any(dim=1).nonzero().flatten()
        if len(spilled):
            report.add(label, False, f"wrote to row {B + int(spilled[0])}, past Y's last row ({B - 1}): "
                                     "the row mask lets a row past the end through")
        elif not torch.equal(Y, b.expand(B, -1)):
            report.add(label, False, "some rows of Y did not get the bias: the mask drops rows inside Y")
        else:
            tiles = "a multiple of" if B % MASK_BLOCK == 0 else "not a multiple of"
            report.add(label, True, f"every row written once, none past the end ({tiles} the tile)")
    return report


# --- Exercise 3: tile sizes -----------------------------------------------------------------------

TILE_SHAPE = {"B": 8192, "n_in": 784, "n_out": 128}  # X (B, n_in) @ W (n_in, n_out), float16
PROCESSORS = 132  # streaming multiprocessors of an H100 SXM: one program each at a time
FAST_MEMORY = 64 * 1024  # bytes one program may hold for one step along K (A and B tiles)
MIN_INTENSITY = 32  # flops per byte loaded, per program
MAX_WASTE = 0.10  # fraction of K-steps spent on masked-off (padding) columns


def tile_numbers(BLOCK_M: int, BLOCK_N: int, BLOCK_K: int, shape=None) -> dict:
    """What a tile choice implies for ``shape`` (default ``TILE_SHAPE``) in float16: programs,
    bytes per K-step, flops per byte loaded, wasted fraction of K."""
    s = shape or TILE_SHAPE
    steps = math.ceil(s["n_in"] / BLOCK_K)
    return {
        "programs": math.ceil(s["B"] / BLOCK_M) * math.ceil(s["n_out"] / BLOCK_N),
        "bytes_per_step": 2 * (BLOCK_M * BLOCK_K + BLOCK_K * BLOCK_N),
        "intensity": BLOCK_M * BLOCK_N / (BLOCK_M + BLOCK_N),  # 2 BM BN BK flops / 2 (BM+BN) BK bytes
        "waste": steps * BLOCK_K / s["n_in"] - 1,
    }


def check_tile_choice(choose) -> Report:
    """Check ``choose()`` -> ``{"BLOCK_M", "BLOCK_N", "BLOCK_K", "why"}`` for ``TILE_SHAPE``.

    The rules: powers of two >= 16 (``tl.dot``); one K-step in ``FAST_MEMORY``; at least
    ``PROCESSORS`` programs (every processor busy); at least ``MIN_INTENSITY`` flops per byte
    loaded; at most ``MAX_WASTE`` of the K-steps on padding; and a reason in words.
    """
    report = Report("check_tile_choice")
    try:
        answer = choose()
    except Exception as error:
        return _failure(report, "answer", error)
    keys = ("BLOCK_M", "BLOCK_N", "BLOCK_K")
    if not isinstance(answer, dict) or not all(k in answer for k in keys):
        report.add("answer", False, f"expected a dict with keys {keys} and 'why', got {answer!r}")
        return report
    sizes = [answer[k] for k in keys]
    bad = [f"{k}={v!r}" for k, v in zip(keys, sizes) if not isinstance(v, int) or v < 16 or v & (v - 1)]
    report.add("powers of two >= 16", not bad, "; ".join(bad) or "tl.arange and tl.dot accept them")
    if bad:
        return report
    n = tile_numbers(*sizes)
    report.add("fits fast memory", n["bytes_per_step"] <= FAST_MEMORY,
               f"{n['bytes_per_step']:,} bytes per K-step (at most {FAST_MEMORY:,})")
    report.add("every processor busy", n["programs"] >= PROCESSORS,
               f"{n['programs']:,} programs for {PROCESSORS} processors")
    report.add("reuse", n["intensity"] >= MIN_INTENSITY,
               f"{n['intensity']:.1f} flops per byte loaded (at least {MIN_INTENSITY})")
    report.add("little padding", n["waste"] <= MAX_WASTE,
               f"{n['waste']:.1%} of the K-steps are masked-off padding (at most {MAX_WASTE:.0%})")
    why = answer.get("why", "")
    report.add("why", isinstance(why, str) and len(why.split()) >= 5,
               "a reason given" if isinstance(why, str) and len(why.split()) >= 5
               else "say in a sentence why these sizes (at least five words)")
    return report
