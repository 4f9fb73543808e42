"""The settings of a training run: ``TrainConfig``, its choices, and the optimizer it asks for.

``TrainConfig`` is frozen and validated in one place (``__post_init__``), so a bad setting is a
``ValueError`` naming it before anything trains; ``dataclasses.replace`` varies it (a sweep, a
lesson) and validates again. Each set of choices is one constant used everywhere (the CLI's
options, the checks, the error messages): ``OPTIMIZERS``, ``SCHEDULES``, ``DEFAULT_LR`` and
``MAX_SHIFT``. ``make_optimizer`` turns the settings into the optimizer and the per-batch
learning-rate schedule that ``course_lib.train.fit`` steps.
"""

import dataclasses
import math
from dataclasses import dataclass
from pathlib import PurePath

import torch
from torch import nn

from .datasets import DATASETS
from .models import INITS

DEFAULT_LR = {"sgd": 0.05, "adam": 0.002}
OPTIMIZERS = tuple(DEFAULT_LR)  # sgd (with Nesterov momentum), adam
SCHEDULES = ("cosine", "constant")
MAX_SHIFT = 4  # pixels: a digit moved further than this starts to leave its 28x28 frame


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a run; frozen: vary it with ``dataclasses.replace(config, ...)``.
    The defaults train well in under a minute on a 2-core CPU.

    ``lr=None`` takes the optimizer's default (``DEFAULT_LR``). ``sgd`` uses Nesterov momentum
    (``momentum``); ``adam`` ignores ``momentum``. ``schedule="cosine"`` lowers the learning rate
    after every batch as ``lr_t = lr * (1 + cos(pi * t / T)) / 2`` over the run's ``T`` batches.
    ``shift`` moves each training batch by up to that many pixels in x and y (augmentation).
    ``init="randn"`` redraws the weights from a standard normal, the source lesson's mistake
    (see ``models.initialise_``), for sweeps that show why it fails.
    ``max_batches`` caps the batches per epoch: the fast mode for notebooks and CI.
    """

    dataset: str = "auto"
    epochs: int = 30
    batch_size: int = 128
    lr: float | None = None
    momentum: float = 0.9
    optimizer: str = "sgd"
    weight_decay: float = 0.0
    schedule: str = "cosine"
    shift: int = 1
    num_units: int = 128
    init: str = "default"
    seed: int = 0
    device: str = "auto"
    max_batches: int | None = None
    data_dir: str | None = None
    out_dir: str | None = None

    def __post_init__(self):
        """Every check of a setting, in one place: a bad one is a ValueError naming it."""
        def need(ok, what):
            if not ok:
                raise ValueError(f"TrainConfig: {what}")

        def positive_int(value, least=1):
            return isinstance(value, int) and not isinstance(value, bool) and value >= least

        for name, choices in (("dataset", DATASETS), ("optimizer", OPTIMIZERS), ("init", INITS),
                              ("schedule", SCHEDULES)):
            need(getattr(self, name) in choices,
                 f"{name} must be one of {', '.join(choices)}, got {getattr(self, name)!r}")
        for name in ("epochs", "batch_size", "num_units"):
            need(positive_int(getattr(self, name), 2 if name == "num_units" else 1),
                 f"{name} must be a positive integer, got {getattr(self, name)!r}")
        need(self.max_batches is None or positive_int(self.max_batches),
             f"max_batches must be a positive integer or None, got {self.max_batches!r}")
        need(positive_int(self.shift, 0) and self.shift <= MAX_SHIFT,
             f"shift must be 0..{MAX_SHIFT} pixels, got {self.shift!r}")
        need(self.lr is None or (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0),
             f"lr must be a positive number, got {self.lr!r}")
        need(0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum!r}")
        need(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay!r}")
        need(isinstance(self.seed, int), f"seed must be an integer, got {self.seed!r}")

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.optimizer]

    def as_record(self) -> dict:
        """The settings as the run record (``course_lib.runlog.RunRecord``) lays them out: one key
        per field, ``lr`` resolved to a number, paths as text. A checkpoint saves this too."""
        values = {k: str(v) if isinstance(v, PurePath) else v for k, v in dataclasses.asdict(self).items()}
        return {**values, "lr": self.learning_rate}

    @classmethod
    def from_record(cls, values: dict, source: str) -> "TrainConfig":
        """The ``TrainConfig`` that ``as_record`` wrote to ``source`` (a checkpoint, say). A key
        that is no field any more (written before a field was renamed or removed) is a
        ``ValueError`` naming it, not an opaque ``TypeError``; a field added since takes its
        default."""
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = [key for key in values if key not in names]
        if unknown:
            raise ValueError(
                f"{source}: its config has {', '.join(map(repr, unknown))}, not a field of "
                f"TrainConfig any more (renamed or removed since it was written); TrainConfig's "
                f"fields are {', '.join(names)}. Start a new run instead of resuming this one.")
        return cls(**values)


def make_optimizer(config: TrainConfig, model: nn.Module, steps_per_epoch: int):
    """The optimizer and the per-batch learning-rate scheduler that ``config`` asks for; the
    cosine schedule runs down to 0 over ``config.epochs * steps_per_epoch`` batches."""
    lr = config.learning_rate
    if config.optimizer == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=config.momentum,
                                    nesterov=config.momentum > 0, weight_decay=config.weight_decay)
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=config.weight_decay)
    total = config.epochs * steps_per_epoch

    def factor(step):  # lr after `step` batches = lr * factor(step)
        if config.schedule == "constant":
            return 1.0
        return 0.5 * (1 + math.cos(math.pi * min(step, total) / total))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
