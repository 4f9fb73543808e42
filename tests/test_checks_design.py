"""Tests of course_lib/checks/design.py: lesson 8's interaction effect and fractional design."""

import itertools

import torch

from course_lib.checks import check_design, check_interaction


def interaction(runs, a, b, metric):
    codes = [runs[n].map(dict(zip(sorted(runs[n].unique()), (-1, 1)))) for n in (a, b)]
    agree = codes[0] * codes[1] > 0
    return runs.loc[agree, metric].mean() - runs.loc[~agree, metric].mean()


def test_interaction():
    assert check_interaction(interaction).passed
    half = check_interaction(lambda *args: interaction(*args) / 2)
    assert "That is half of it" in str(half)
    flipped = check_interaction(lambda *args: -interaction(*args))
    assert "The sign is flipped" in str(flipped)
    assert "raised" in str(check_interaction(lambda runs, a, b, metric: runs[a] * runs[b]))


def design(grid, generators):
    """16 runs: the first four hyperparameters' full grid, the last two as products of codes."""
    names = list(grid)
    points = []
    for codes in itertools.product((-1, 1), repeat=4):
        extra = tuple(int(torch.tensor([codes[i] for i in g]).prod()) for g in generators)
        points.append({n: grid[n][(c + 1) // 2] for n, c in zip(names, codes + extra)})
    return points


def test_design():
    assert check_design(lambda grid: design(grid, [(0, 1, 2), (1, 2, 3)])).passed
    aliased = check_design(lambda grid: design(grid, [(0, 1), (2, 3)]))  # resolution III
    assert aliased.failed_names() == ["main effects clear"]
    assert "lr is confounded with num_units x shift" in str(aliased)
    full = check_design(lambda grid: [dict(zip(grid, v)) for v in itertools.product(*grid.values())])
    assert full.failed_names() == ["size"] and "at most 16" in str(full)
    bad_value = check_design(lambda grid: [dict(design(grid, [(0, 1, 2), (1, 2, 3)])[0], lr=0.5)])
    assert bad_value.failed_names() == ["settings"]
