"""Where the course's files live: the data folder and the runs folder.

Each is found in one place, in this order: an explicit argument, an environment variable
(``COURSE_DATA_DIR``, ``COURSE_RUNS_DIR``), the checkout's ``data/`` or ``runs/`` folder, and,
when the package is installed outside a checkout, a per-user folder under ``~/.cache/course_lib``.
Never the working directory.
"""

import os
from pathlib import Path


def repo_root() -> Path | None:
    """The checkout that holds this package, or ``None`` when it is installed elsewhere."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "pyproject.toml").is_file() and (root / "course_lib").is_dir() else None


def user_dir(kind: str) -> Path:
    """A per-user folder for ``kind`` (``data`` or ``runs``) when there is no checkout."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "course_lib" / kind


def resolve_dir(explicit, env_var: str, kind: str) -> Path:
    """``explicit``, else ``$env_var``, else the checkout's ``kind/`` folder (``user_dir(kind)``
    when there is no checkout): how the data and the runs folders are found."""
    if explicit is not None and str(explicit) != "":
        return Path(explicit).expanduser()
    if os.environ.get(env_var):
        return Path(os.environ[env_var]).expanduser()
    root = repo_root()
    return root / kind if root is not None else user_dir(kind)


def resolve_data_dir(data_dir=None) -> Path:
    """The data folder: ``data_dir``, else ``$COURSE_DATA_DIR``, else the checkout's ``data/``."""
    return resolve_dir(data_dir, "COURSE_DATA_DIR", "data")


def resolve_out_dir(out_dir=None) -> Path:
    """The runs folder: ``out_dir``, else ``$COURSE_RUNS_DIR``, else the checkout's ``runs/``."""
    return resolve_dir(out_dir, "COURSE_RUNS_DIR", "runs")
