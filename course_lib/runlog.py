"""The run record: one schema for a line of the run log (``RunRecord``, with ``EpochRecord`` for
each epoch of its ``history``), and the run log itself (``runs.jsonl`` in the runs folder,
``course_lib.paths.resolve_out_dir``).

``course_lib.train`` builds a ``RunRecord`` and appends it with ``append_run_log``;
``course_lib.analysis`` reads the log back with ``read_run_log``, which gives every record the
schema's columns (a line written before a field existed reads as null there). The same field
names are the keys of ``python -m course_lib train --summary-json`` and of the config a
checkpoint saves (``course_lib.checkpoint``). Files are written through ``course_lib.files``.
"""

import json
import math
import os
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from .files import NotWritable, atomic_write, save_checkpoint, writable_dir  # noqa: F401  (moved to course_lib.files; kept for older imports)
from .paths import resolve_out_dir

RUN_LOG = "runs.jsonl"  # in the runs folder: one RunRecord per line
STATUSES = ("completed", "interrupted", "diverged", "failed")  # a run's ``status``


@dataclass
class EpochRecord:
    """One epoch of a run, an item of ``RunRecord.history``."""

    epoch: int
    train_loss: float
    train_acc: float  # accuracies are fractions in [0, 1], counted over every sample
    val_loss: float
    val_acc: float
    lr: float  # the learning rate at the epoch's first batch
    seconds: float  # training time, evaluation excluded: the epochs add up to train_seconds


@dataclass
class RunRecord:
    """One line of the run log: a run's settings, what it ran on, and its results, as flat keys
    (the row format pandas and HiPlot read). Numbers that are not finite are written as null.

    A resumed run appends a new line with the same ``run_id``, covering the whole run; keep the
    last line of each run with ``df.drop_duplicates("run_id", keep="last")``.
    """

    run_id: str
    status: str  # one of STATUSES ("failed": stopped by an error)
    # The run's TrainConfig, every field, with lr resolved to a number
    dataset: str
    epochs: int
    batch_size: int
    lr: float
    momentum: float
    optimizer: str
    weight_decay: float
    schedule: str
    shift: int
    num_units: int
    init: str
    seed: int
    device: str
    max_batches: int | None
    data_dir: str | None
    out_dir: str | None
    # What it ran on
    resolved_dataset: str  # "mnist-5k" when "auto" fell back
    device_used: str
    world_size: int  # processes that trained together (torchrun); 1 for a plain run
    backend: str | None  # how they talked: "gloo" (CPU) or "nccl" (CUDA); null for a plain run
    devices: list  # each process's device, in rank order
    torch_version: str
    torchvision_version: str
    python_version: str
    course_lib_version: str
    started_at: str  # ISO 8601, UTC
    # Timings
    wall_seconds: float
    train_seconds: float
    samples_per_second: float | None
    # Results
    epochs_completed: int
    resumed_at_epoch: int  # 0 for a fresh run
    best_epoch: int | None  # the epoch with the lowest validation loss
    best_val_loss: float | None
    final_train_loss: float | None
    final_train_acc: float | None
    final_val_loss: float | None
    final_val_acc: float | None
    test_loss: float | None  # of the best checkpoint; null unless completed
    test_acc: float | None
    checkpoint: str | None  # best.pt's path relative to the runs folder
    input_mean: float  # the model expects x = (pixel / 255 - input_mean) / input_std
    input_std: float
    history: list  # one EpochRecord (as a dict) per epoch

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"RunRecord: status must be one of {', '.join(STATUSES)}, got {self.status!r}")

    @classmethod
    def columns(cls) -> list:
        """The field names, in order: the run log's columns."""
        return [f.name for f in fields(cls)]


# ``train --summary-json``: these fields of the run's record, with the record's names and values,
# and where the run's files are (``checkpoint`` is relative to ``runs_dir``, as in the record).
SUMMARY_FIELDS = ("run_id", "status", "test_acc", "test_loss", "checkpoint", "resolved_dataset",
                  "epochs", "best_epoch", "samples_per_second", "wall_seconds", "device_used")


def summary(record: RunRecord, out_dir) -> dict:
    """The ``--summary-json`` of a run: ``SUMMARY_FIELDS`` of ``record``, then ``runs_dir`` and
    ``run_log``, the runs folder and its run log as absolute paths."""
    out_dir = Path(out_dir).resolve()
    return {**{name: getattr(record, name) for name in SUMMARY_FIELDS}, "runs_dir": str(out_dir),
            "run_log": str(out_dir / RUN_LOG)}


def _finite(value):
    """JSON has no NaN or infinity: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def append_run_log(path, record: RunRecord) -> None:
    """Append ``record`` as one JSON line, in one write, flushed to disk."""
    line = (json.dumps(_finite(asdict(record)), allow_nan=False) + "\n").encode()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab+", buffering=0) as f:  # unbuffered append: one write() call per line
        if f.seek(0, os.SEEK_END) and (f.seek(-1, os.SEEK_END), f.read(1))[1] != b"\n":
            line = b"\n" + line  # a run killed mid-write left a partial line: start a fresh one
        f.write(line)
        os.fsync(f.fileno())


def read_run_log(path_or_dir=None):
    """The run log as a ``pandas.DataFrame``, one row per line and one column per ``RunRecord``
    field, in the schema's order (a folder means its runs.jsonl; default: the runs folder).

    A line that lacks a field (written before the field existed) reads as null there; keys the
    schema does not declare are left out with a warning. Lines that are not valid JSON (a run
    killed while writing) are skipped with a warning.
    """
    path = resolve_out_dir(path_or_dir)
    if path.is_dir():
        path = path / RUN_LOG
    if not path.is_file():
        raise FileNotFoundError(f"no run log at {path}: train a model first (python -m course_lib train)")
    records, bad, unknown = [], [], set()
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                bad.append(number)
            else:
                unknown |= set(records[-1]) - set(RunRecord.columns())
    if bad:
        warnings.warn(f"{path}: skipped line(s) {bad}, not valid JSON (a run cut short while "
                      "writing its record)", stacklevel=2)
    if unknown:
        warnings.warn(f"{path}: left out {sorted(unknown)}, not fields of course_lib.runlog.RunRecord "
                      "(written by another version of course_lib?)", stacklevel=2)
    import pandas as pd  # here, not at the top: importing pandas costs 0.3 s, and the checks import this module

    columns = RunRecord.columns()
    return pd.DataFrame([[r.get(c) for c in columns] for r in records], columns=columns)
