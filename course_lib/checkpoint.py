"""The saved state of a run: what ``course_lib.train.fit`` leaves in ``<out_dir>/<run_id>/``.

``best.pt`` (``BEST``)
    the state dict of the epoch with the lowest validation loss:
    ``NeuralNet(num_units).load_state_dict(torch.load(path, weights_only=True))``.
``last.pt`` (``LAST``)
    a ``Checkpoint``, written at the end of every epoch: the run's ``TrainConfig`` in the run
    record's layout (``TrainConfig.as_record``), its ``Progress`` (the counters its run record
    reports) and the model, optimizer, scheduler and RNG states, everything the run needs to
    continue exactly where it stopped;
    ``fit(resume=run_id)`` continues it (``find_resume`` says where that ``last.pt`` is).

A new run's folder is named by ``new_run_id``: the UTC time it started and a random suffix.
"""

import dataclasses
import math
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch

from .config import TrainConfig
from .files import save_checkpoint
from .runlog import EpochRecord

BEST, LAST = "best.pt", "last.pt"  # in the run's folder


@dataclass
class Progress:
    """What a run has done so far: the counters its run record reports."""

    run_id: str
    epoch: int = 0  # epochs completed
    history: list = field(default_factory=list)  # one EpochRecord dict per epoch
    best_epoch: int | None = None
    best_val_loss: float = math.inf
    samples: int = 0
    train_seconds: float = 0.0
    wall_seconds: float = 0.0  # up to the end of the last completed epoch, over every resume

    def add(self, row: EpochRecord, samples: int) -> bool:
        """Count a finished epoch; return whether its validation loss is the best so far."""
        self.epoch, self.samples = row.epoch, self.samples + samples
        self.train_seconds += row.seconds
        self.history.append(dataclasses.asdict(row))
        if not row.val_loss < self.best_val_loss:
            return False
        self.best_epoch, self.best_val_loss = row.epoch, row.val_loss
        return True


@dataclass
class Checkpoint:
    """``last.pt``: everything a run needs to continue exactly where it stopped."""

    config: TrainConfig
    dataset: str  # the dataset it trained on ("auto" resolved): a resumed run reloads this one
    progress: Progress
    states: dict  # model, optimizer, scheduler: state dicts; generator, torch_rng: RNG states

    def save(self, path) -> None:
        """Write it atomically (a Ctrl-C while saving leaves the previous one intact)."""
        save_checkpoint({**dataclasses.asdict(self.progress), "config": self.config.as_record(),
                         "resolved_dataset": self.dataset, **self.states}, path)

    @classmethod
    def load(cls, path) -> "Checkpoint":
        """Read ``path``; a config written before a field was renamed or removed is a
        ``ValueError`` that names the field."""
        saved = torch.load(path, map_location="cpu", weights_only=True)
        progress = Progress(**{f.name: saved.pop(f.name) for f in dataclasses.fields(Progress)})
        config = TrainConfig.from_record(saved.pop("config"), f"checkpoint {path}")
        return cls(config, saved.pop("resolved_dataset"), progress, saved)


def new_run_id(out_dir: Path) -> str:
    """A run id not yet taken in ``out_dir``: ``YYYYmmdd-HHMMSS-xxxxxx`` (UTC, random suffix)."""
    while True:  # the random suffix keeps two runs started in the same second apart
        run_id = f"{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"
        if not (out_dir / run_id).exists():
            return run_id


def find_resume(resume, out_dir: Path) -> Path:
    """The ``last.pt`` that ``resume`` names: the file itself, a run folder, or a run id in ``out_dir``."""
    path = Path(resume)
    for candidate in (path, path / LAST, out_dir / str(resume) / LAST):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"nothing to resume at {resume!r}: give a run id in {out_dir}, a run folder, or its "
        "last.pt (a run can be resumed once it has finished its first epoch)")
