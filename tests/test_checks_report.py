"""Tests of course_lib/checks/report.py: a report's text and verdict, and each line ``compare`` and
``raised`` write."""

import pytest
import torch

from course_lib.checks import Report, compare
from course_lib.checks.report import raised, random_float64


def test_report_text_aligns_names_and_counts_passes():
    report = Report("check_x")
    report.add("a", True, "fine")
    report.add("longer name", False)
    assert str(report) == "check_x: 1 of 2 correct\n  PASS  a            fine\n  FAIL  longer name"
    assert not report and report.failed_names() == ["longer name"]
    with pytest.raises(AssertionError, match="FAIL  longer name"):
        report.raise_if_failed()


def test_an_empty_report_has_not_passed():
    assert not Report("check_x").passed  # a check that checked nothing proves nothing


def test_compare_names_each_kind_of_wrong_tensor():
    expected = torch.arange(6, dtype=torch.float64).reshape(2, 3)
    report = Report("check_x")
    assert compare("right", expected.float(), expected, report)
    assert not compare("none", None, expected, report, hint="Return it.")
    assert not compare("list", [1.0], expected, report)
    assert not compare("transposed", expected.t(), expected, report)
    assert not compare("nan", expected * float("nan"), expected, report)
    off = expected.clone()
    off[1, 2] += 0.5
    assert not compare("off", off, expected, report)
    details = {line.name: line.detail for line in report.lines}
    assert details["right"] == "shape (2, 3), largest error 0.0e+00"
    assert details["none"] == "returned None, expected a tensor of shape (2, 3). Return it."
    assert details["list"] == "returned list, expected a tensor of shape (2, 3)"
    assert details["transposed"] == "shape (3, 2), expected (2, 3) (transposed?)."
    assert details["nan"] == "shape (2, 3), but it contains NaN or inf"
    assert details["off"] == "shape (2, 3), largest error 0.5 at index (1, 2)."


def test_raised_words_the_exception_and_fails_the_line():
    report = raised(Report("check_x"), "forward", ValueError("bad input"))
    assert str(report) == "check_x: 0 of 1 correct\n  FAIL  forward  raised ValueError: bad input"


def test_random_float64_draws_one_tensor_per_shape_from_the_seed():
    a, b = random_float64((2, 3), (4,), seed=3)
    assert (a.shape, b.shape, a.dtype) == ((2, 3), (4,), torch.float64)
    again = random_float64((2, 3), (4,), seed=3)
    assert torch.equal(a, again[0]) and torch.equal(b, again[1])
    assert not torch.equal(a, random_float64((2, 3), seed=4)[0])
