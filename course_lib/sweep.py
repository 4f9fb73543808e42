"""Hyperparameter sweeps: which settings to train (a full grid, or a balanced fraction of it).

``python -m course_lib sweep`` and lesson 08 train every point ``sweep_points`` returns with
``course_lib.train.fit``; each run is one line of the run log.
"""

import dataclasses
import itertools
import math

from .config import TrainConfig

# The command line's default grid, {TrainConfig field: values} (lesson 8 sweeps a grid like it).
# Two values each, so that --fraction can run a balanced quarter of it (8 of 32 combinations).
SWEEP_GRID = {"lr": [0.003, 0.03], "num_units": [32, 128], "batch_size": [64, 256],
              "optimizer": ["sgd", "adam"], "init": ["default", "randn"]}


def sweep_points(grid: dict, fraction: bool = False) -> list:
    """The settings a sweep trains: every combination of ``grid``'s values, in order, or with
    ``fraction`` a balanced fraction of them.

    The fraction needs exactly two values per hyperparameter. It has ``n`` runs, the smallest
    power of two above the number of hyperparameters (8 for 4 to 7 of them); in run ``r`` the
    hyperparameter in column ``c = 1, 2, ...`` takes its value number ``popcount(r & c) % 2``.
    Any two hyperparameters then meet in each of their four pairings equally often (an
    orthogonal array of strength 2), so each value's mean is taken over the same mix of the
    other settings, and run 0 is the first value of everything.
    """
    names = list(grid)
    if not fraction:
        return [dict(zip(names, values)) for values in itertools.product(*grid.values())]
    not_two = [name for name in names if len(grid[name]) != 2]
    if not_two:
        raise ValueError(f"a fraction needs exactly two values per hyperparameter; "
                         f"{', '.join(not_two)} {'has' if len(not_two) == 1 else 'have'} "
                         "another number: give two, or run the whole grid")
    runs = 1 << len(names).bit_length()
    return [{name: grid[name][bin(r & c).count("1") % 2] for c, name in enumerate(names, 1)}
            for r in range(runs)]


def parse_grid(items) -> dict:
    """``["lr=0.01,0.1", "optimizer=sgd,adam"]`` -> ``{"lr": [0.01, 0.1], "optimizer": [...]}``."""
    fields = [f.name for f in dataclasses.fields(TrainConfig)]
    grid = {}
    for item in items:
        name, sep, values = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or not values.strip():
            raise ValueError(f"--grid {item!r}: write NAME=VALUE1,VALUE2 (e.g. --grid lr=0.01,0.1)")
        if name not in fields:
            raise ValueError(f"--grid {item!r}: {name!r} is not a TrainConfig field; "
                             f"choose from {', '.join(fields)}")
        grid[name] = [_value(v.strip()) for v in values.split(",")]
    return grid


def _value(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return None if text.lower() == "none" else text


def half_fraction(grid: dict) -> list:
    """Half of the full grid of two-valued hyperparameters, chosen so that no main effect and no
    two-way interaction shares its runs with another (for 5 or more hyperparameters).

    Code each value as -1 (first) or +1 (second); keep the combinations whose codes multiply to
    +1. The product of all codes is then constant, so each effect is confounded only with the
    effect of the *other* hyperparameters together: a main effect with a (k-1)-way interaction,
    a two-way interaction with a (k-2)-way one. For 5 hyperparameters: 16 of the 32 runs.
    """
    not_two = [name for name, values in grid.items() if len(values) != 2]
    if not_two:
        raise ValueError(f"half_fraction needs exactly two values per hyperparameter; "
                         f"{', '.join(not_two)} {'has' if len(not_two) == 1 else 'have'} another number")
    names = list(grid)
    keep = [codes for codes in itertools.product((-1, 1), repeat=len(names))
            if math.prod(codes) == 1]
    return [{name: grid[name][(c + 1) // 2] for name, c in zip(names, codes)} for codes in keep]
