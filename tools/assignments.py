"""``python tools/assignments.py ...`` is ``python -m grader ...`` (the grader is the package
``grader/``; see its cli.py): validate, release and autograde the course's assignments."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository: import grader

from grader.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
