"""Tests of course_lib/checks/autograd.py: autograd's errors in course terms."""

from course_lib.checks.autograd import explain
from course_lib.checks.linear import GRAD_NAMES


def test_explain_turns_autograd_shape_errors_into_course_terms():
    error = RuntimeError("Function Linear_LayerBackward returned an invalid gradient at index 1 - got [3, 5] "
                         "but expected shape compatible with [5, 3]")
    assert explain(error, GRAD_NAMES) == "grad_weight has shape (3, 5), expected (5, 3): transposed?"
    error = RuntimeError("returned an invalid gradient at index 0 - got [4, 3] but expected shape compatible with [3]")
    assert explain(error, ["grad_bias"]) == "grad_bias has shape (4, 3), expected (3,): not summed over the batch?"
    assert explain(ValueError("not enough values to unpack (expected 3, got 0)")) == (
        "raised ValueError: not enough values to unpack (expected 3, got 0) "
        "(ctx.saved_tensors is empty: did forward call ctx.save_for_backward?)")
