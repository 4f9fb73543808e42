"""Checks for lesson 1's exercises: a network's parameter count, a scale and shift folded into a layer."""

import torch

from .report import Report, as_number, compare, raised, random_float64


def check_parameter_count(fn) -> Report:
    """Check ``fn(sizes)`` counts the weights and biases of a fully connected network.

    ``sizes`` lists the layer widths, input first (``[784, 128, 64, 10]``); the expected count is
    what ``torch.nn.Linear`` layers of those sizes hold: ``sum(n_in * n_out + n_out)``.
    """
    report = Report("check_parameter_count")
    for sizes in ([3, 1], [4, 3], [10, 5, 1], [784, 128, 64, 10]):
        label = "sizes " + "-".join(map(str, sizes))
        pairs = list(zip(sizes, sizes[1:]))
        # "meta" tensors have shapes but no storage: no memory, no draw from the random generator.
        expected = sum(p.numel() for a, b in pairs
                       for p in torch.nn.Linear(a, b, device="meta").parameters())
        try:
            got = fn(list(sizes))
        except Exception as e:
            raised(report, label, e)
            continue
        got = as_number(got)
        if isinstance(got, bool) or not isinstance(got, (int, float)):
            report.add(label, False, f"returned {type(got).__name__}, expected an integer")
        elif got == expected:
            report.add(label, True, f"{expected:,} parameters")
        else:
            hint = ""
            if got == sum(a * b for a, b in pairs):
                hint = " That is the weights alone: each layer also has one bias per output."
            elif got == sum(a * b + a for a, b in pairs):
                hint = " A layer has one bias per output, not per input."
            report.add(label, False, f"got {got:,}, expected {expected:,}.{hint}")
    return report


def check_fold_scale_shift(fn, seed: int = 0) -> Report:
    """Check ``fn(weight, bias, scale, shift) -> (weight2, bias2)`` folds a per-output scale and
    shift into the layer: ``(x W + b) * scale + shift == x W2 + b2`` for every ``x``."""
    report = Report("check_fold_scale_shift")
    w, b, s, t, x = random_float64((5, 3), (3,), (3,), (3,), (4, 5), seed=seed)
    try:
        got = fn(w.clone(), b.clone(), s.clone(), t.clone())
        w2, b2 = got
    except Exception as e:
        return raised(report, "fold", e)
    compare("weight", w2, w * s, report, hint="Which entries of the weight feed output j, the one its scale multiplies?")
    compare("bias", b2, b * s + t, report, hint="What happens to the old bias when the output is scaled?")
    if report.passed:
        compare("outputs for a batch", x @ w2 + b2, (x @ w + b) * s + t, report)
    return report
