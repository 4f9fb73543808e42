"""Checks of experiment design for lesson 8: a two-way interaction effect read off a run log, and
a fraction of a two-level grid that leaves every main effect clear."""

import itertools
import math

import torch

from .report import Report, as_number, raised


def _codes(values, column):
    """-1 for a hyperparameter's first (sorted) value, +1 for its second."""
    low, high = sorted(set(values))
    return [(-1 if v == low else 1) for v in column]


def check_interaction(fn) -> Report:
    """Check ``fn(runs, a, b, metric)`` returns the two-way interaction of ``a`` and ``b``:
    the mean ``metric`` where their codes agree minus the mean where they differ (each value
    coded -1 for the smaller, +1 for the larger), on a made-up run log with known effects."""
    import pandas as pd  # here: every notebook imports the checks, few need pandas

    report = Report("check_interaction")
    grid = {"lr": [0.01, 0.03], "optimizer": ["adam", "sgd"], "num_units": [32, 128]}
    rows = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    runs = pd.DataFrame(rows * 2)  # every combination twice
    c = {n: pd.Series(_codes(grid[n], runs[n])) for n in grid}
    # main effects 0.10 (lr), -0.30 (optimizer); lr x optimizer interaction -0.20; noise-free
    runs["final_val_acc"] = 0.6 + 0.05 * c["lr"] - 0.15 * c["optimizer"] - 0.1 * c["lr"] * c["optimizer"]
    runs["test_acc"] = 0.5 + 0.02 * c["num_units"] * c["lr"]
    for a, b, metric, expected in [("lr", "optimizer", "final_val_acc", -0.2),
                                   ("optimizer", "lr", "final_val_acc", -0.2),
                                   ("lr", "num_units", "test_acc", 0.04),
                                   ("optimizer", "num_units", "final_val_acc", 0.0)]:
        label = f"{a} x {b} on {metric}"
        try:
            got = fn(runs.copy(), a, b, metric)
            got = float(as_number(got))
        except Exception as e:
            raised(report, label, e)
            continue
        if math.isclose(got, expected, abs_tol=1e-9):
            report.add(label, True, f"{got:+.3f}")
            continue
        hint = ""
        if expected and math.isclose(got, expected / 2, abs_tol=1e-9):
            hint = " That is half of it: an effect is a difference of two means, not a half-difference."
        elif expected and math.isclose(got, -expected, abs_tol=1e-9):
            hint = " The sign is flipped: code the smaller (first sorted) value -1."
        report.add(label, False, f"{got:+.4f}, expected {expected:+.4f}.{hint}")
    return report


def _confounded(points: list, names: list) -> list:
    """Pairs (main effect, other main effect or two-way interaction) with the same +-1 column."""
    grid = {n: sorted({p[n] for p in points}) for n in names}
    col = {n: torch.tensor(_codes(grid[n], [p[n] for p in points]), dtype=torch.float64) for n in names}
    effects = dict(col)
    effects.update({f"{a} x {b}": col[a] * col[b] for a, b in itertools.combinations(names, 2)})
    clashes = []
    for main in names:
        for other, column in effects.items():
            if other != main and main not in other.split(" x ") and (col[main] @ column).item() != 0:
                clashes.append((main, other))
    return clashes


def check_design(fn, max_runs: int = 16) -> Report:
    """Check ``fn(grid) -> list of settings dicts`` for six two-valued hyperparameters: at most
    ``max_runs`` runs, values from the grid, and every main effect unconfounded with every other
    main effect and every two-way interaction (each pair of +-1 columns orthogonal)."""
    report = Report("check_design")
    grid = {"lr": [0.01, 0.03], "num_units": [32, 128], "batch_size": [64, 128],
            "optimizer": ["sgd", "adam"], "shift": [0, 1], "momentum": [0.0, 0.9]}
    try:
        points = list(fn({k: list(v) for k, v in grid.items()}))
    except Exception as e:
        return raised(report, "design", e)
    names = list(grid)
    bad = [p for p in points if not isinstance(p, dict) or set(p) != set(names)
           or any(p[n] not in grid[n] for n in names)]
    report.add("settings", bool(points) and not bad, f"{len(points)} runs, values from the grid"
               if points and not bad else f"each run must be a dict of all six hyperparameters "
               f"with values from the grid; first bad one: {bad[0] if bad else 'no runs at all'}")
    if not report.passed:
        return report
    report.add("size", len(points) <= max_runs, f"{len(points)} runs" + (
        "" if len(points) <= max_runs else f", at most {max_runs} asked (the whole grid is 64)"))
    unbalanced = [n for n in names if 2 * sum(p[n] == grid[n][0] for p in points) != len(points)]
    report.add("balance", not unbalanced, "each value in half the runs" if not unbalanced else
               f"{', '.join(unbalanced)}: the two values are not in half of the runs each")
    clashes = _confounded(points, names)
    report.add("main effects clear", not clashes, "no main effect is confounded with another "
               "main effect or a two-way interaction" if not clashes else
               "; ".join(f"{m} is confounded with {o}" for m, o in clashes[:3])
               + (f" (and {len(clashes) - 3} more)" if len(clashes) > 3 else ""))
    return report
