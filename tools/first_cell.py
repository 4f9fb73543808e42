"""Give each lesson the course's first code cell: the install guard and the device.

    python tools/first_cell.py                       # every notebooks/*.ipynb
    python tools/first_cell.py notebooks/04_x.ipynb  # some of them
    python tools/first_cell.py --check               # only list the lessons without it (exit 1)

The first code cell of every lesson starts with GUARD: when ``course_lib`` cannot be imported it
says which command installs it (instead of a bare ``ModuleNotFoundError``), then it picks the
device once (``course_lib.device``, which imports nothing of the training stack) and prints
it. The tool is idempotent: a cell that has the guard is left alone, an older version of the
guard is replaced, and a cell without one gets it on top. In that case the
lines the guard now does are taken out of the rest of the cell: ``import torch``, a second
``print`` of the device, and ``x = resolve_device(...)`` becomes ``x = DEVICE``. The outputs
of a changed lesson are stale: re-run it (``python tools/run_notebooks.py NOTEBOOK``).
"""

import argparse
import re
import sys
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parent.parent
GUARD = '''try:
    import course_lib
except ModuleNotFoundError:
    raise ModuleNotFoundError(
        "course_lib is not installed in this Python environment. From the repository's root run "
        "`pip install -e .` (or `pip install` the course wheel), then restart the kernel.") from None
import torch
from course_lib.device import resolve_device
DEVICE = resolve_device("auto")  # CUDA, then Apple's MPS, then the CPU
print(f"device: {DEVICE.type}")'''
# An earlier or hand-edited guard: from its ``try:`` through its device print.
OLD_GUARD = re.compile(r"try:\n    import course_lib\n.*?\nprint\(f\"device: [^\n]*\n?", re.DOTALL)
REDUNDANT = re.compile(r"import torch|from course_lib\.(?:device|train) import resolve_device"
                       r"|print\(f[\"']device: [^\n]*\)")
DEVICE_LINE = re.compile(r"^(\w+) = resolve_device\([^)]*\)(.*)$")


def without_duplicates(rest: str) -> str:
    """``rest`` of a first cell, less what GUARD already does (see the module docstring)."""
    lines = []
    for line in rest.split("\n"):
        stripped = line.strip()
        if REDUNDANT.fullmatch(stripped):
            continue
        match = DEVICE_LINE.match(line)
        if match and match.group(1) != "DEVICE":
            line = f"{match.group(1)} = DEVICE{match.group(2)}"
        elif match:
            continue
        lines.append(line)
    return "\n".join(lines).strip("\n")


def with_guard(source: str) -> str:
    """The first cell's new source: GUARD, then the cell's own code."""
    if source.startswith(GUARD):
        return source
    if OLD_GUARD.match(source):
        rest = source[OLD_GUARD.match(source).end():]
    else:
        rest = without_duplicates(source)
    return GUARD + ("\n\n" + rest.lstrip("\n") if rest.strip() else "")


def has_guard(nb) -> bool:
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    return bool(code) and code[0].source.startswith(GUARD)


def add_guard(nb) -> bool:
    """Give ``nb`` the guard (in place); return whether anything changed."""
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    if not code:  # a notebook without code gets its first code cell after the title
        nb.cells.insert(min(1, len(nb.cells)), nbformat.v4.new_code_cell(GUARD))
        return True
    new = with_guard(code[0].source)
    if new == code[0].source:
        return False
    code[0].source = new
    code[0].outputs, code[0].execution_count = [], None  # the old outputs no longer match
    return True


def notebook_file(text: str) -> Path:
    """argparse type: an existing .ipynb file."""
    if not text.endswith(".ipynb") or not Path(text).is_file():
        raise argparse.ArgumentTypeError(f"not a notebook file: {text}")
    return Path(text)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[1:]))
    parser.add_argument("notebooks", nargs="*", type=notebook_file,
                        help="notebooks to update (default: every notebooks/*.ipynb)")
    parser.add_argument("--check", action="store_true",
                        help="change nothing; list the notebooks without the guard, exit 1 if any")
    args = parser.parse_args(argv)
    paths = args.notebooks or sorted((REPO / "notebooks").glob("*.ipynb"))
    changed = []
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        if args.check:
            if not has_guard(nb):
                changed.append(path)
        elif add_guard(nb):
            nbformat.write(nb, path)
            changed.append(path)
    verb = "without the guard" if args.check else "updated (re-run them to refresh their outputs)"
    for path in changed:
        print(f"{verb}: {path}")
    if not changed:
        print(f"all {len(paths)} notebook(s) start with the guard")
    return 1 if args.check and changed else 0


if __name__ == "__main__":
    sys.exit(main())
