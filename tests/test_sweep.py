"""course_lib.sweep.half_fraction: half of a two-level grid with no low-order effect confounded."""

import itertools
import math

import pytest

from course_lib.sweep import half_fraction, sweep_points

GRID = {"lr": [0.01, 0.03], "num_units": [32, 128], "batch_size": [64, 128],
        "optimizer": ["sgd", "adam"], "shift": [0, 1]}


def columns(points, names):
    code = {n: [(-1 if p[n] == GRID[n][0] else 1) for p in points] for n in names}
    return {combo: [math.prod(code[n][i] for n in combo) for i in range(len(points))]
            for k in (1, 2) for combo in itertools.combinations(names, k)}


def test_half_of_the_grid_keeps_main_effects_and_two_way_interactions_apart():
    points = half_fraction(GRID)
    assert len(points) == 16 and len({tuple(p.values()) for p in points}) == 16
    assert all(p in sweep_points(GRID) for p in points)
    cols = columns(points, list(GRID))
    for a, b in itertools.combinations(cols, 2):  # every pair of effects orthogonal
        assert sum(x * y for x, y in zip(cols[a], cols[b])) == 0, (a, b)


def test_half_fraction_needs_two_values_each():
    with pytest.raises(ValueError, match="lr has another number"):
        half_fraction({"lr": [0.1, 0.2, 0.3], "shift": [0, 1]})
