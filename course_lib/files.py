"""Generic file helpers: a folder checked writable before the work that fills it, and files
written atomically (a reader, or a Ctrl-C, never sees half a file).

``writable_dir`` raises ``NotWritable`` naming what goes there and how to choose another folder;
``atomic_write`` replaces a file in one step; ``save_checkpoint`` is ``torch.save`` through it.
"""

import contextlib
import io
import os
import tempfile
from pathlib import Path

import torch


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
