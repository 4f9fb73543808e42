"""How runs are written: atomic files, checkpoints and the run log (``runs.jsonl``) in the runs
folder (``course_lib.paths.resolve_out_dir``).

``course_lib.train`` writes through these functions and ``course_lib.analysis`` reads through
``read_run_log``; the run log's keys are listed in ``course_lib.train``'s docstring.
"""

import contextlib
import io
import json
import math
import os
import tempfile
import warnings
from pathlib import Path

import torch

from .paths import resolve_out_dir

RUN_LOG = "runs.jsonl"


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


def append_run_log(path, record: dict) -> None:
    """Append ``record`` as one JSON line, in one write, flushed to disk."""
    line = (json.dumps(_finite(record), allow_nan=False) + "\n").encode()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab+", buffering=0) as f:  # unbuffered append: one write() call per line
        if f.seek(0, os.SEEK_END) and (f.seek(-1, os.SEEK_END), f.read(1))[1] != b"\n":
            line = b"\n" + line  # a run killed mid-write left a partial line: start a fresh one
        f.write(line)
        os.fsync(f.fileno())


def read_run_log(path_or_dir=None):
    """The run log as a ``pandas.DataFrame``, one row per line (a folder means its runs.jsonl).

    Lines that are not valid JSON (a run killed while writing) are skipped with a warning.
    """
    import pandas as pd

    path = resolve_out_dir(path_or_dir)
    if path.is_dir():
        path = path / RUN_LOG
    if not path.is_file():
        raise FileNotFoundError(f"no run log at {path}: train a model first (python -m course_lib train)")
    records, bad = [], []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                bad.append(number)
    if bad:
        warnings.warn(f"{path}: skipped line(s) {bad}, not valid JSON (a run cut short while "
                      "writing its record)", stacklevel=2)
    return pd.DataFrame.from_records(records)
