"""Keep every lesson's solutions out of sight until a reader asks for them.

    python tools/lesson_layout.py            # tag and collapse the solution cells of every lesson
    python tools/lesson_layout.py --check    # list the solution cells that are not collapsed
    python tools/lesson_layout.py notebooks/07_mnist_training.ipynb   # some lessons only

A solution cell is a code cell tagged ``solution``, or a code cell under a "Check your answers"
heading that defines a ``solution_*`` function or a ``Solution*`` class (this tool then tags it).
Collapsed means both of:

- ``metadata.jupyter.source_hidden = true``: JupyterLab shows the cell as a collapsed input;
- the tag ``hide-input``: MyST-NB (the website) puts the input behind a toggle, closed by default.

Only cell metadata changes: no source, output or cell id is touched, and nothing is executed.
"""

import argparse
import re
import sys
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parents[1]
TAG = "solution"
HIDE_TAG = "hide-input"
CHECK_HEADING = re.compile(r"^#+\s*Check your answers\s*$", re.IGNORECASE | re.MULTILINE)
ANY_HEADING = re.compile(r"^#+\s", re.MULTILINE)
DEFINES_SOLUTION = re.compile(r"^(?:def solution_\w*|class Solution\w*)\s*[(:]", re.MULTILINE)


def lessons() -> list:
    return sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def solution_cells(nb) -> list:
    """Indices of the solution cells of notebook ``nb`` (see the module docstring)."""
    found, under_check = [], False
    for index, cell in enumerate(nb.cells):
        headings = [line for line in cell.source.splitlines() if ANY_HEADING.match(line)]
        if cell.cell_type == "markdown" and headings:  # the last heading decides
            under_check = bool(CHECK_HEADING.match(headings[-1]))
        if cell.cell_type != "code":
            continue
        if TAG in cell.metadata.get("tags", []) or (under_check
                                                    and DEFINES_SOLUTION.search(cell.source)):
            found.append(index)
    return found


def is_collapsed(cell) -> bool:
    return (cell.metadata.get("jupyter", {}).get("source_hidden") is True
            and {TAG, HIDE_TAG} <= set(cell.metadata.get("tags", [])))


def collapse(cell) -> None:
    tags = cell.metadata.setdefault("tags", [])
    tags.extend(tag for tag in (TAG, HIDE_TAG) if tag not in tags)
    cell.metadata.setdefault("jupyter", {})["source_hidden"] = True


def describe(path: Path, nb, index: int) -> str:
    cell = nb.cells[index]
    first = cell.source.splitlines()[0] if cell.source else ""
    name = path.relative_to(REPO) if path.is_relative_to(REPO) else path
    return f"{name}: cell {index} (id {cell.get('id')}): {first[:60]}"


def problems(path: Path) -> list:
    """One line per solution cell of ``path`` that is not collapsed."""
    nb = nbformat.read(path, as_version=4)
    return [describe(path, nb, i) for i in solution_cells(nb) if not is_collapsed(nb.cells[i])]


def apply(path: Path) -> list:
    """Collapse every solution cell of ``path``; return the ones that changed."""
    nb = nbformat.read(path, as_version=4)
    changed = [i for i in solution_cells(nb) if not is_collapsed(nb.cells[i])]
    for index in changed:
        collapse(nb.cells[index])
    if changed:
        nbformat.write(nb, path)
    return [describe(path, nb, i) for i in changed]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[1:]))
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: every lesson")
    parser.add_argument("--check", action="store_true",
                        help="change nothing; fail listing the solution cells not collapsed")
    args = parser.parse_args(argv)
    paths = [p.resolve() for p in args.notebooks] or lessons()
    lines = [line for path in paths for line in (problems if args.check else apply)(path)]
    if args.check and lines:
        print("solution cells not collapsed (run: python tools/lesson_layout.py):", *lines,
              sep="\n  ", file=sys.stderr)
        return 1
    for line in lines:
        print(f"collapsed {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
