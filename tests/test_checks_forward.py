"""Tests of course_lib/checks/forward.py: lesson 1's parameter count and folded scale and shift."""

from course_lib.checks import check_fold_scale_shift, check_parameter_count


def test_parameter_count_check():
    def right(sizes):
        return sum(a * b + b for a, b in zip(sizes, sizes[1:]))

    report = check_parameter_count(right)
    assert report.passed and "109,386 parameters" in str(report)
    weights_only = check_parameter_count(lambda s: sum(a * b for a, b in zip(s, s[1:])))
    assert len(weights_only.failed_names()) == 4
    assert "the weights alone" in str(weights_only)
    bias_per_input = check_parameter_count(lambda s: sum(a * b + a for a, b in zip(s, s[1:])))
    assert "one bias per output, not per input" in str(bias_per_input)
    assert "returned str" in str(check_parameter_count(lambda s: "109386"))


def test_fold_scale_shift():
    assert check_fold_scale_shift(lambda w, b, s, t: (w * s, b * s + t)).passed
    report = check_fold_scale_shift(lambda w, b, s, t: (w * s, b + t))  # forgot to scale b
    assert report.failed_names() == ["bias"] and "old bias" in str(report)
    report = check_fold_scale_shift(lambda w, b, s, t: (s * w, t + s * b))
    assert report.passed  # any way of writing the same numbers passes
    assert "raised" in str(check_fold_scale_shift(lambda w, b, s, t: w * s))
