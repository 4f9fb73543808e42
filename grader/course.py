"""The nbgrader course directory: settings, validating and releasing the sources, and what the
gradebook recorded at release time (the tests, hidden ones included, that grading runs).

The course directory (default ``assignments/``) is an ordinary nbgrader course: sources in
``source/<assignment>/``, student versions in ``release/<assignment>/``, submissions in
``submitted/<student>/<assignment>/`` and the sqlite gradebook ``gradebook.db``; its
``nbgrader_config.py`` holds the settings. Validation and release are nbgrader's own Python API.
Source notebooks are validated in a kernel of *this* Python environment, whatever kernels the
user has registered.
"""

import os
import re
import sys
from pathlib import Path

import nbformat
from traitlets.config.loader import PyFileConfigLoader

from grader.text import first_line, strip_ansi

REPO = Path(__file__).resolve().parent.parent
COURSE = REPO / "assignments"
MARKERS = ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS")


class AssignmentError(Exception):
    """A problem the instructor must fix before this command can do its job."""


def use_this_environment(workdir: Path) -> None:
    """Run nbgrader's helpers and kernels from the Python that runs this script.

    nbgrader calls ``alembic`` from ``PATH``, and looks kernels up by name ("python3") where a
    user-registered kernel of another environment would win; a kernel spec of our own, first on
    ``JUPYTER_PATH``, makes "python3" mean ``sys.executable``.
    """
    bin_dir = str(Path(sys.executable).parent)
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    import ipykernel.kernelspec
    ipykernel.kernelspec.write_kernel_spec(workdir / "kernels" / "python3")  # argv[0]: sys.executable
    os.environ["JUPYTER_PATH"] = os.pathsep.join(filter(None, [str(workdir), os.environ.get("JUPYTER_PATH")]))


def load_config(course: Path):
    """The course's ``nbgrader_config.py``, rooted at ``course``."""
    if not (course / "source").is_dir():
        raise AssignmentError(f"{course} has no source/ folder: give the course directory "
                              "(the one holding source/ and nbgrader_config.py) with --course-dir")
    if not (course / "nbgrader_config.py").is_file():
        raise AssignmentError(f"{course / 'nbgrader_config.py'} is missing: copy it from the repository")
    config = PyFileConfigLoader("nbgrader_config.py", path=str(course)).load_config()
    config.CourseDirectory.root = str(course.resolve())
    import zmq
    if zmq.has("curve"):  # encrypt kernel traffic (and silence ipykernel's warning about it)
        config.KernelManager.transport_encryption = "auto"
    return config


def nbgrader_api(course: Path):
    from nbgrader.apps import NbGraderAPI  # slow import: only for commands that need it
    return NbGraderAPI(config=load_config(course))


def source_assignments(course: Path, names=()) -> list:
    """The assignments in ``source/`` (all, or the ``names`` asked for, which must exist)."""
    found = sorted(p.name for p in (course / "source").iterdir()
                   if p.is_dir() and not p.name.startswith(".") and any(p.glob("*.ipynb")))
    unknown = [n for n in names if n not in found]
    if unknown:
        raise AssignmentError(f"no assignment named {', '.join(unknown)} in {course / 'source'}; "
                              f"there are: {', '.join(found) or 'none'}")
    return list(names) or found


def nbgrader_meta(cell) -> dict:
    """A cell's nbgrader metadata, ``{}`` when it has none or something that is not a dict."""
    meta = cell.get("metadata") if isinstance(cell, dict) else None
    found = meta.get("nbgrader") if isinstance(meta, dict) else None
    return found if isinstance(found, dict) else {}


def nbgrader_cells(nb) -> dict:
    """``{grade_id: nbgrader metadata}`` of the nbgrader cells of ``nb``, in order."""
    metas = (nbgrader_meta(cell) for cell in nb.cells)
    return {m["grade_id"]: m for m in metas if isinstance(m.get("grade_id"), str)}


def graded_tests(nb) -> list:
    """The graded test cells of ``nb`` (a graded cell that is also a solution is a written answer)."""
    return [gid for gid, m in nbgrader_cells(nb).items() if m.get("grade") and not m.get("solution")]


def validate(course: Path, names=()) -> dict:
    """Run every source notebook with nbgrader's ``Validator``.

    Returns ``{notebook path relative to course: {"tests": [grade ids], "failed": {grade id or
    cell source: error text}}}``; every cell that raised counts, not only test cells.
    """
    from nbgrader.validator import Validator
    config = load_config(course)
    config.Validator.validate_all = True  # an error anywhere in a source notebook is a bug
    results = {}
    for name in source_assignments(course, names):
        for path in sorted((course / "source" / name).glob("*.ipynb")):
            nb = nbformat.read(path, as_version=4)
            label = {c.source.strip(): nbgrader_meta(c).get("grade_id")
                     or f"cell {i + 1} ({first_line(c.source)})" for i, c in enumerate(nb.cells)}
            outcome = Validator(config=config).validate(str(path))
            failed = {label.get(cell["source"], first_line(cell["source"])): error_summary(cell["raw_error"])
                      for cell in outcome.get("failed", [])}
            for cell in outcome.get("type_changed", []):  # nbgrader stops before running these
                failed[label.get(cell["source"], first_line(cell["source"]))] = (
                    f"the cell is now {cell['new_type']}, nbgrader expects {cell['old_type']}")
            results[str(path.relative_to(course))] = {"tests": graded_tests(nb), "failed": failed}
    return results


def print_validation(results: dict) -> bool:
    ok = True
    for path, result in results.items():
        failed = result["failed"]
        n = len(result["tests"])
        print(f"{'ok    ' if not failed else 'FAILED'}  {path}: "
              f"{n - sum(t in failed for t in result['tests'])} of {n} test cells pass")
        for cell, error in failed.items():
            ok = False
            print(f"    {cell}:\n        " + error.replace("\n", "\n        "))
    return ok


def release(course: Path, names=()) -> list:
    """Generate the student version of each assignment into ``release/`` (and the gradebook)."""
    api = nbgrader_api(course)
    written = []
    for name in source_assignments(course, names):
        result = api.generate_assignment(name)
        if not result["success"]:
            raise AssignmentError(f"nbgrader could not generate {name}:\n"
                                  f"{result.get('log', '')}{result.get('error', '')}")
        for path in sorted((course / "release" / name).glob("*.ipynb")):
            text = path.read_text(encoding="utf-8")
            leaked = [m for m in MARKERS if m in text]
            if leaked:  # nbgrader should never let this happen; refuse to hand it out if it does
                raise AssignmentError(f"{path} still contains {', '.join(leaked)}: do not hand it out")
            written.append(path)
    return written


def released_assignments(db_url: str, course: Path) -> dict:
    """``{assignment: (max score, {notebook: cells})}`` as recorded in the gradebook at release
    time, where ``cells`` is ``{grade_id: {"kind": "setup" | "answer" | "test", "source",
    "points"}}`` in the order of the source notebook (when it is still there)."""
    from nbgrader.api import Gradebook
    released = {}
    with Gradebook(db_url) as gb:
        for a in sorted(gb.assignments, key=lambda a: a.name):
            notebooks = {}
            for nb in a.notebooks:
                points = {c.name: c.max_score for c in nb.grade_cells}
                answers = {c.name for c in nb.solution_cells}
                cells = {c.name: {"kind": "answer" if c.name in answers else "test" if c.name in points
                                  else "setup", "source": c.source, "points": points.get(c.name, 0.0)}
                         for c in nb.source_cells if c.cell_type == "code"}
                order = source_order(course / "source" / a.name / f"{nb.name}.ipynb")
                notebooks[nb.name] = dict(sorted(cells.items(), key=lambda kv: order.get(kv[0], len(order))))
            released[a.name] = (a.max_score, notebooks)
    return released


def source_order(path: Path) -> dict:
    return {gid: i for i, gid in enumerate(nbgrader_cells(nbformat.read(path, as_version=4)))} \
        if path.is_file() else {}


def grading_settings(course: Path, assignment: str, notebook: str) -> dict:
    """The source notebook's ``metadata.grading``: ``withheld`` (the course_lib solutions this
    notebook asks the student to write), ``autograd`` (``false``: autograd is off in the
    sandbox) and ``call_s`` (seconds of CPU one call into the student's code may take)."""
    path = course / "source" / assignment / f"{notebook}.ipynb"
    meta = nbformat.read(path, as_version=4).metadata if path.is_file() else {}
    settings = dict(meta.get("grading", {}))
    return {"withheld": list(settings.get("withheld", [])), "autograd": bool(settings.get("autograd", True)),
            "call_s": settings.get("call_s")}


def error_summary(traceback_text: str) -> str:
    """The exception line of a cell's traceback and what follows it (a check's report)."""
    lines = strip_ansi(traceback_text).strip().splitlines()
    starts = [i for i, ln in enumerate(lines) if re.match(r"[A-Za-z_][\w.]*(Error|Exception|Exit)\b", ln)]
    return "\n".join(lines[starts[-1]:] if starts else lines[-1:]).strip()
