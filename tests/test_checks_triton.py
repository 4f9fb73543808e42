"""course_lib.checks.triton: the lesson-11 checks pass right answers, fail wrong ones with a reason,
and report NOT ATTEMPTED for the stub. Kernels run under Triton's interpreter without CUDA."""

from __future__ import annotations  # kernel annotations (tl.constexpr) stay strings until launch

import pytest
import torch
from triton_interpreter import interpreter  # noqa: F401  (the fixture: Triton in the interpreter)

from course_lib.checks import exercise
from course_lib.checks import triton as checks
from course_lib.triton_linear import grad_bias_kernel


def first_block_only(g_ptr, out_ptr, B, N, stride_gb, stride_gn, ACC_DTYPE: tl.constexpr,
                     BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr):
    """A wrong reduction: sums only the first BLOCK_B rows (no loop over the batch)."""
    cols = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    rows = tl.arange(0, BLOCK_B)
    g = tl.load(g_ptr + rows[:, None] * stride_gb + cols[None, :] * stride_gn,
                mask=(rows[:, None] < B) & (cols[None, :] < N), other=0.0)
    tl.store(out_ptr + cols, tl.sum(g, axis=0), mask=cols < N)


def stub_kernel(g_ptr, out_ptr, B, N, stride_gb, stride_gn, ACC_DTYPE: tl.constexpr,
                BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr):
    raise NotImplementedError  # your code here


def fixed_add_bias_kernel(y_ptr, b_ptr, M, N, stride_m, stride_n, BLOCK_M: tl.constexpr,
                          BLOCK_N: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask = (rows[:, None] < M) & (cols[None, :] < N)
    ptrs = y_ptr + rows[:, None] * stride_m + cols[None, :] * stride_n
    y = tl.load(ptrs, mask=mask, other=0.0)
    b = tl.load(b_ptr + cols, mask=cols < N, other=0.0)
    tl.store(ptrs, y + b[None, :], mask=mask)


tl = None


@pytest.fixture(autouse=True)
def language(interpreter):  # noqa: F811  (after the interpreter fixture has loaded Triton)
    """The kernels above find ``tl`` among this module's globals, as the interpreter requires."""
    from course_lib import triton_linear

    globals()["tl"] = triton_linear.tl


def test_grad_bias_check_passes_the_library_kernel_and_names_the_wrong_columns():
    assert checks.check_grad_bias_kernel(grad_bias_kernel).passed
    report = checks.check_grad_bias_kernel(first_block_only)
    assert report.failed_names() == ["G of shape (130, 70)"]  # the only batch longer than a block
    assert "every program add up every row" in str(report)


def test_a_stub_kernel_is_not_attempted_and_the_solution_is_still_checked():
    report = exercise(checks.check_grad_bias_kernel, stub_kernel, solution=grad_bias_kernel)
    assert "NOT ATTEMPTED" in str(report) and not report.passed
    with pytest.raises(AssertionError, match="check_grad_bias_kernel"):
        exercise(checks.check_grad_bias_kernel, stub_kernel, solution=first_block_only)


def test_the_off_by_one_mask_passes_at_multiples_of_the_tile_and_fails_at_130():
    report = checks.check_row_mask_kernel(checks.buggy_add_bias_kernel)
    assert report.failed_names() == ["B = 1", "B = 7", "B = 130"]
    assert "wrote to row 130, past Y's last row (129)" in str(report)
    assert checks.check_row_mask_kernel(fixed_add_bias_kernel).passed


def test_add_bias_in_place_adds_b_to_every_row():
    Y, b = torch.zeros(130, 10), torch.arange(10.0)
    assert torch.equal(checks.add_bias_in_place(fixed_add_bias_kernel, Y, b), b.expand(130, 10))


@pytest.mark.parametrize("tiles, failed", [
    ((64, 64, 32), []),
    ((128, 128, 128), ["every processor busy", "little padding"]),
    ((32, 64, 16), ["reuse"]),
    ((64, 64, 512), ["fits fast memory", "little padding"]),
    ((48, 64, 32), ["powers of two >= 16"]),
])
def test_tile_choice_rules(tiles, failed):
    answer = dict(zip(("BLOCK_M", "BLOCK_N", "BLOCK_K"), tiles), why="enough programs, and reuse of each tile")
    assert checks.check_tile_choice(lambda: answer).failed_names() == failed


def test_tile_choice_needs_a_reason_and_a_dict():
    answer = {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 32, "why": "fast"}
    assert checks.check_tile_choice(lambda: answer).failed_names() == ["why"]
    assert checks.check_tile_choice(lambda: (64, 64, 32)).failed_names() == ["answer"]
    assert checks.tile_numbers(64, 64, 16) == {"programs": 256, "bytes_per_step": 4096,
                                               "intensity": 32.0, "waste": 0.0}
