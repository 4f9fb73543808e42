"""``course_lib.sweep``: which settings a sweep trains (the whole grid or a balanced fraction)."""

import dataclasses
import itertools

import pytest

from course_lib import sweep
from course_lib.config import TrainConfig


def test_sweep_points_is_the_whole_grid_in_order():
    points = sweep.sweep_points({"lr": [0.1, 0.01], "num_units": [32, 64, 128]})
    assert points == [{"lr": lr, "num_units": n} for lr in (0.1, 0.01) for n in (32, 64, 128)]


def test_sweep_fraction_is_balanced_for_every_pair_of_hyperparameters():
    grid = {"lr": [0.003, 0.03], "num_units": [32, 128], "batch_size": [64, 256],
            "optimizer": ["sgd", "adam"], "init": ["default", "randn"]}
    points = sweep.sweep_points(grid, fraction=True)
    assert len(points) == 8 and len({tuple(p.values()) for p in points}) == 8
    assert points[0] == {name: values[0] for name, values in grid.items()}
    for a, b in itertools.combinations(grid, 2):
        pairs = [(p[a], p[b]) for p in points]
        assert sorted(set(pairs)) == sorted(itertools.product(grid[a], grid[b]))
        assert all(pairs.count(pair) == 2 for pair in set(pairs)), (a, b, pairs)
    assert len(sweep.sweep_points(dict(list(grid.items())[:3]), fraction=True)) == 4
    with pytest.raises(ValueError, match="exactly two values per hyperparameter; num_units has"):
        sweep.sweep_points({"lr": [1, 2], "num_units": [8, 16, 32]}, fraction=True)


def test_parse_grid_types_the_values_and_names_the_mistakes():
    assert sweep.parse_grid(["lr=0.01,0.1", "num-units=32,64", "optimizer=sgd,adam",
                           "max_batches=None,5"]) == {
        "lr": [0.01, 0.1], "num_units": [32, 64], "optimizer": ["sgd", "adam"],
        "max_batches": [None, 5]}
    with pytest.raises(ValueError, match="'width' is not a TrainConfig field; choose from"):
        sweep.parse_grid(["width=1,2"])
    with pytest.raises(ValueError, match="write NAME=VALUE1,VALUE2"):
        sweep.parse_grid(["lr"])


def test_the_course_grid_is_trainconfig_settings_two_each():
    grid = sweep.SWEEP_GRID
    assert {"lr", "num_units", "batch_size", "optimizer", "init"} == set(grid)
    assert all(len(values) == 2 for values in grid.values())
    for point in sweep.sweep_points(grid):  # every point is a valid config (TrainConfig checks)
        assert dataclasses.replace(TrainConfig(), **point).num_units in grid["num_units"]


def test_half_fraction_keeps_main_effects_and_two_way_interactions_apart():
    grid = {"lr": [0.01, 0.03], "num_units": [32, 128], "batch_size": [64, 128],
            "optimizer": ["sgd", "adam"], "shift": [0, 1]}
    points = sweep.half_fraction(grid)
    assert len(points) == 16 and len({tuple(p.values()) for p in points}) == 16
    assert all(p in sweep.sweep_points(grid) for p in points)
    code = {n: [(-1 if p[n] == grid[n][0] else 1) for p in points] for n in grid}
    cols = {combo: [code[combo[0]][i] * (code[combo[1]][i] if len(combo) == 2 else 1)
                    for i in range(len(points))]
            for k in (1, 2) for combo in itertools.combinations(grid, k)}
    for a, b in itertools.combinations(cols, 2):  # every pair of effects orthogonal
        assert sum(x * y for x, y in zip(cols[a], cols[b])) == 0, (a, b)


def test_half_fraction_needs_two_values_each():
    with pytest.raises(ValueError, match="lr has another number"):
        sweep.half_fraction({"lr": [0.1, 0.2, 0.3], "shift": [0, 1]})
