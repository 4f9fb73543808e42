"""A student's folder as the grader reads it: no link followed, every file copied into memory
once, every malformed notebook one student's problem.

A submission is untrusted input: a symlink in ``submitted/`` could make the grader read (and
grade, and show in the feedback) the instructor's source notebook or another student's work, and
a crafted file could crash the reader. ``read_submission`` refuses links anywhere in the folder,
opens each notebook with ``O_NOFOLLOW`` (so a link swapped in after the check is refused too),
reads it into memory (the grader's own copy: nothing re-reads the student's file), and turns any
exception while parsing into ``InvalidSubmission`` with a line for the table.
"""

import os
import stat
import warnings
from pathlib import Path

import nbformat

from grader.course import nbgrader_meta
from grader.text import first_line

MAX_NOTEBOOK_BYTES = 50 * 2**20  # a notebook with outputs is rarely over 5 MB


class InvalidSubmission(Exception):
    """A submission the grader will not grade; the message says why, for the table."""


def links_in(folder: Path) -> list:
    """The symbolic links in ``folder`` (itself included), relative to its parent, never followed."""
    if folder.is_symlink():
        return [folder.name]
    found = []
    for root, dirs, files in os.walk(folder, followlinks=False):
        for name in dirs + files:
            if os.path.islink(os.path.join(root, name)):
                found.append(os.path.relpath(os.path.join(root, name), folder.parent))
    return sorted(found)


def read_bytes(path: Path) -> bytes:
    """The bytes of a regular file, refusing a link (``O_NOFOLLOW``), a fifo or a device."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as e:
        raise InvalidSubmission(f"{path.name} cannot be read ({e.strerror}); it is not a plain file") from None
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise InvalidSubmission(f"{path.name} is not a plain file")
        if info.st_size > MAX_NOTEBOOK_BYTES:
            raise InvalidSubmission(f"{path.name} is {info.st_size / 2**20:.0f} MB, over the "
                                    f"{MAX_NOTEBOOK_BYTES / 2**20:.0f} MB a notebook may have")
        return f.read(MAX_NOTEBOOK_BYTES + 1)


def parse_notebook(data: bytes, name: str = "the notebook"):
    """A version-4 ``NotebookNode`` from ``data`` whose every cell has a type, a string source
    and a dict of metadata; ``InvalidSubmission`` for anything else (cut-off JSON, a deep
    array, a missing field, a schema error), never another exception."""
    try:
        with warnings.catch_warnings():  # nbformat warns of what it repairs (duplicate cell ids)
            warnings.simplefilter("ignore")
            nb = nbformat.reads(data.decode("utf-8"), as_version=4)
            nbformat.validate(nb)
        cells = nb["cells"]
        if not isinstance(cells, list):
            raise TypeError("cells is not a list")
        for cell in cells:
            if not isinstance(cell.get("source"), str) or cell.get("cell_type") not in ("code", "markdown", "raw"):
                raise TypeError("a cell lacks its type or its source")
            if not isinstance(cell.get("metadata"), dict):
                raise TypeError("a cell's metadata is not a dict")
        return nb
    except RecursionError:
        raise InvalidSubmission(f"{name} is not a valid notebook file (nested too deeply); "
                                "ask the student to submit it again") from None
    except Exception as e:  # noqa: BLE001 (whatever a crafted file raises is this student's problem)
        raise InvalidSubmission(f"{name} is not a valid notebook file ({type(e).__name__}: "
                                f"{first_line(e, 200)}); ask the student to submit it again") from None


def grade_ids(nb) -> set:
    """The grade_ids of the notebook's cells (only strings count)."""
    return {m["grade_id"] for m in map(nbgrader_meta, nb.cells) if isinstance(m.get("grade_id"), str)}
