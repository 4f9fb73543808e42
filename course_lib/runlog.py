"""The run record and how runs are written: one schema for a line of the run log (``RunRecord``,
with ``EpochRecord`` for each epoch of its ``history``), atomic files and checkpoints, and the run
log itself (``runs.jsonl`` in the runs folder, ``course_lib.paths.resolve_out_dir``).

``course_lib.train`` builds a ``RunRecord`` and appends it with ``append_run_log``;
``course_lib.analysis`` reads the log back with ``read_run_log``, which gives every record the
schema's columns (a line written before a field existed reads as null there).
"""

import contextlib
import io
import json
import math
import os
import tempfile
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch

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


class NotWritable(OSError):
    """A file or folder the course has to write cannot be written (the message says which)."""


def writable_dir(path, what: str, how: str) -> Path:
    """Make sure ``path`` is a folder this process can write to (creating it), or raise
    ``NotWritable`` naming ``what`` goes there and ``how`` to choose another folder. Called before
    the work whose results go there, so a bad folder costs seconds, not a training run."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        reason = "it is a file, not a folder" if path.is_file() else e.strerror or str(e)
        raise NotWritable(f"cannot write {what} to {path}: {reason}. Choose a folder "
                          f"you can write to ({how}).") from None
    return path


def atomic_write(path, data: bytes | str) -> Path:
    """Write ``data`` (text is UTF-8 encoded) to ``path`` so that ``path`` is always either the
    old file or the new one; return ``path``.

    The new file gets the permissions of the file it replaces, or for a new file the usual ones
    (``0o666`` less the umask), not the owner-only mode of the temporary file it is written as.
    """
    path = Path(path)
    if isinstance(data, str):
        data = data.encode("utf-8")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise NotWritable(f"cannot write {path}: {e.strerror or e}. Choose a path in a folder you "
                          "can write to.") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _mode_for(path))
        os.replace(tmp, path)
    except BaseException:  # Ctrl-C included: never leave a half-written file behind
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def _mode_for(path: Path) -> int:
    """The permission bits a file written at ``path`` should get."""
    try:
        return path.stat().st_mode & 0o777
    except FileNotFoundError:
        umask = os.umask(0)  # the only portable way to read the umask is to set it
        os.umask(umask)
        return 0o666 & ~umask


def save_checkpoint(obj, path) -> None:
    """``torch.save`` through ``atomic_write``; load with ``torch.load(path, weights_only=True)``."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write(path, buffer.getvalue())


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
    import pandas as pd

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
    columns = RunRecord.columns()
    return pd.DataFrame([[r.get(c) for c in columns] for r in records], columns=columns)
