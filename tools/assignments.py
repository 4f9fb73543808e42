"""Graded assignments with nbgrader: check the sources, release them, autograde submissions.

    python tools/assignments.py validate  [NAME ...]   run each source notebook: every test must pass
    python tools/assignments.py release   [NAME ...]   validate, then write the student versions
    python tools/assignments.py autograde [--csv PATH] grade every submission, print the score table

The course directory (``--course-dir``, default ``assignments/``) is an ordinary nbgrader course:
sources in ``source/<assignment>/``, student versions in ``release/<assignment>/``, submissions in
``submitted/<student>/<assignment>/``, and the sqlite gradebook ``gradebook.db`` that records the
test cells (hidden tests included) at release time and every score at grading time. Its
``nbgrader_config.py`` holds the settings. All the work is done by nbgrader's own Python API;
this script adds the checks and messages around it, and the score table.

Notebooks run in a kernel of *this* Python environment, whatever kernels the user has registered.
"""

import argparse
import os
import re
import sys
import tempfile
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nbformat
from traitlets.config.loader import PyFileConfigLoader

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


def nbgrader_cells(nb) -> dict:
    """``{grade_id: nbgrader metadata}`` of the nbgrader cells of ``nb``, in order."""
    metas = (cell.get("metadata", {}).get("nbgrader", {}) for cell in nb.cells)
    return {m["grade_id"]: m for m in metas if m.get("grade_id")}


def graded_tests(nb) -> list:
    """The graded test cells of ``nb`` (a graded cell that is also a solution is a written answer)."""
    return [gid for gid, m in nbgrader_cells(nb).items() if m.get("grade") and not m.get("solution")]


# ---------------------------------------------------------------------------------------------
# validate and release
# ---------------------------------------------------------------------------------------------


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
            label = {c.source.strip(): c.metadata.get("nbgrader", {}).get("grade_id")
                     or f"cell {i + 1} ({_line(c.source)})" for i, c in enumerate(nb.cells)}
            outcome = Validator(config=config).validate(str(path))
            failed = {label.get(cell["source"], _line(cell["source"])): _error_summary(cell["raw_error"])
                      for cell in outcome.get("failed", [])}
            for cell in outcome.get("type_changed", []):  # nbgrader stops before running these
                failed[label.get(cell["source"], _line(cell["source"]))] = (
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


# ---------------------------------------------------------------------------------------------
# autograde
# ---------------------------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the score table: a student's result on one assignment."""

    student: str
    assignment: str
    score: float = 0.0
    max_score: float = 0.0
    status: str = "graded"
    failed_tests: list = field(default_factory=list)
    details: str = ""


def released_assignments(db_url: str) -> dict:
    """``{assignment: (max score, {notebook: (all nbgrader cell ids, test cell ids)})}`` for every
    assignment in the gradebook, as recorded at release time."""
    from nbgrader.api import Gradebook
    with Gradebook(db_url) as gb:
        return {a.name: (a.max_score, {nb.name: ({c.name for c in nb.source_cells},
                                                 {c.name for c in nb.grade_cells} - {c.name for c in nb.solution_cells})
                                       for nb in a.notebooks})
                for a in sorted(gb.assignments, key=lambda a: a.name)}


def inspect_submission(folder: Path, expected: dict, row: Row) -> bool:
    """Check a submission folder before nbgrader sees it; fill ``row`` and return whether to grade.

    nbgrader stops on a notebook it cannot read and skips one it does not know, so these cases
    are caught here, with what the instructor should do about each.
    """
    if not folder.is_dir():
        row.status = "not submitted"
        return False
    found = {p.name for p in folder.glob("*.ipynb")}
    missing, notes = [], []
    for name, (cell_ids, test_ids) in expected.items():
        path = folder / f"{name}.ipynb"
        if not path.is_file():
            missing.append(path.name)
            continue
        try:
            nb = nbformat.read(path, as_version=4)
        except (ValueError, UnicodeDecodeError) as e:  # NotJSONError is a ValueError
            row.status = "invalid notebook"
            row.details = (f"{path.name} is not a valid notebook file ({_line(e)}); "
                           "ask the student to submit it again")
            return False
        present = set(nbgrader_cells(nb))
        deleted_tests = sorted(test_ids - present)
        deleted_other = sorted(cell_ids - test_ids - present)
        if deleted_tests:
            row.status = "graded, test cells restored"
            notes.append(f"{path.name}: the student deleted test cells {', '.join(deleted_tests)}; "
                         "nbgrader put them back and ran them")
        if deleted_other:
            notes.append(f"{path.name}: the student deleted cells {', '.join(deleted_other)}")
    row.details = "; ".join(notes)
    if missing:
        others = sorted(found - {f"{n}.ipynb" for n in expected})
        hint = (f"; found {', '.join(others)}: if that is the student's work, rename it to "
                f"{missing[0]} and run `make autograde` again" if others else "")
        note = f"missing {', '.join(missing)}{hint}"
        row.details = "; ".join(filter(None, [note, row.details]))
        if len(missing) == len(expected):
            row.status = "missing notebook"
            return False
    return True


def autograde(course: Path, csv_path: Path = None) -> list:
    """Grade ``submitted/<student>/<assignment>/`` for every student and assignment, in order.

    Returns the score table rows and writes them to ``csv_path`` (``<course>/scores.csv``). A bad
    submission gets a row saying what is wrong; grading goes on with the next one.
    """
    submitted = course / "submitted"
    students = sorted(p.name for p in submitted.iterdir() if p.is_dir() and not p.name.startswith(".")) \
        if submitted.is_dir() else []
    if not students:
        raise AssignmentError(f"no submissions in {submitted}: put each student's work in "
                              "submitted/<student>/<assignment>/<notebook>.ipynb")
    api = nbgrader_api(course)
    released = released_assignments(api.coursedir.db_url)
    if not released:
        raise AssignmentError(f"no assignment is in the gradebook {api.coursedir.db_url}: run "
                              "`make assignments` (python tools/assignments.py release) before grading")
    rows = []
    for student in students:
        for folder in sorted(p for p in (submitted / student).iterdir()
                             if p.is_dir() and not p.name.startswith(".") and p.name not in released):
            rows.append(Row(student, folder.name, status="unknown assignment", details=(
                f"no released assignment named {folder.name}; they are {', '.join(released)}")))
        for assignment, (max_score, notebooks) in released.items():
            row = Row(student, assignment, max_score=max_score)
            print(f"grading {student} / {assignment}", flush=True)
            if inspect_submission(submitted / student / assignment, notebooks, row):
                try:
                    result = api.autograde(assignment, student)
                except Exception as e:  # one broken submission must not stop the others
                    result = {"success": False, "error": f"{type(e).__name__}: {e}"}
                if result["success"]:
                    read_scores(api.gradebook, course, row)
                else:
                    row.status = "autograde error"
                    row.details = "; ".join(filter(None, [row.details, _line(result.get("error", ""), -1)]))
            rows.append(row)
    write_csv(rows, csv_path or course / "scores.csv")
    return rows


def read_scores(gradebook, course: Path, row: Row) -> None:
    """Fill ``row`` from the gradebook, naming each failed test and the first thing it reported."""
    with gradebook as gb:
        submission = gb.find_submission(row.assignment, row.student)
        row.score, row.max_score = submission.score, submission.max_score
        failures = []
        for notebook in submission.notebooks:
            outputs = _test_outputs(course / "autograded" / row.student / row.assignment / f"{notebook.name}.ipynb")
            for grade in notebook.grades:
                if grade.score < grade.max_score:
                    row.failed_tests.append(grade.name)
                    failures.append(f"{grade.name} ({grade.score:g}/{grade.max_score:g}): "
                                    f"{outputs.get(grade.name, 'no output')}")
    row.details = "; ".join(filter(None, [row.details] + failures))


def _test_outputs(path: Path) -> dict:
    """``{test grade id: the first FAIL line of its report, or its error}`` in a graded notebook."""
    found = {}
    if not path.is_file():
        return found
    for cell in nbformat.read(path, as_version=4).cells:
        gid = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                fails = [ln.strip() for ln in out.get("evalue", "").splitlines() if ln.strip().startswith("FAIL")]
                found[gid] = (" ".join(fails[0].split()) if fails else
                              f"{out.get('ename')}: {_line(out.get('evalue', ''))}").rstrip(": ")
    return found


def write_csv(rows: list, path: Path) -> None:
    """Write the table next to its final place, then rename: never half a file."""
    import pandas as pd
    from course_lib.runlog import atomic_write

    table = pd.DataFrame([{**asdict(r), "failed_tests": ";".join(r.failed_tests)} for r in rows])
    atomic_write(path, table.to_csv(index=False))


def print_table(rows: list) -> None:
    width = {k: max([len(k)] + [len(str(getattr(r, k))) for r in rows]) for k in ("student", "assignment", "status")}
    print(f"\n{'student':<{width['student']}}  {'assignment':<{width['assignment']}}  "
          f"{'score':>11}  {'status':<{width['status']}}  failed tests")
    for r in rows:
        print(f"{r.student:<{width['student']}}  {r.assignment:<{width['assignment']}}  "
              f"{r.score:>5g} / {r.max_score:<3g}  {r.status:<{width['status']}}  {', '.join(r.failed_tests)}".rstrip())
    notes = [r for r in rows if r.details]
    if notes:
        print("\nnotes:")
        for r in notes:
            print(f"  {r.student} / {r.assignment}: {r.details}")


def _line(text, index: int = 0) -> str:
    """The first (or ``index``-th) non-blank line of ``text``, without colour codes."""
    lines = [ln.strip() for ln in _strip_ansi(str(text)).splitlines() if ln.strip()]
    return lines[index] if lines else ""


def _error_summary(traceback_text: str) -> str:
    """The exception line of a cell's traceback and what follows it (a check's report)."""
    lines = _strip_ansi(traceback_text).strip().splitlines()
    starts = [i for i, ln in enumerate(lines) if re.match(r"[A-Za-z_][\w.]*(Error|Exception|Exit)\b", ln)]
    return "\n".join(lines[starts[-1]:] if starts else lines[-1:]).strip()


def _strip_ansi(text: str) -> str:
    from nbconvert.filters import strip_ansi
    return strip_ansi(text)


# ---------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--course-dir", type=Path, default=COURSE,
                        help="the nbgrader course directory (default: assignments/)")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("validate", "run the source notebooks; every test must pass"),
                       ("release", "validate, then generate the student versions into release/")):
        p = sub.add_parser(name, help=text)
        p.add_argument("names", nargs="*", help="assignments (default: every one in source/)")
    sub.choices["release"].add_argument("--no-validate", action="store_true",
                                        help="skip running the source notebooks first")
    grade = sub.add_parser("autograde", help="grade submitted/<student>/<assignment>/ and print the scores")
    grade.add_argument("--csv", type=Path, help="where to write the score table (default: <course>/scores.csv)")
    args = parser.parse_args(argv)
    course = args.course_dir.resolve()

    # Noise from inside nbgrader that an instructor can do nothing about: its gradebook session
    # warns while creating a student, and a test cell it restores has no cell id.
    warnings.filterwarnings("ignore", message=".*not in session.*")
    warnings.filterwarnings("ignore", message="Cell is missing an id field")
    with tempfile.TemporaryDirectory(prefix="nbgrader-kernels-") as workdir:
        use_this_environment(Path(workdir))
        try:
            if args.command in ("validate", "release") and not getattr(args, "no_validate", False):
                if not print_validation(validate(course, args.names)):
                    print("\nsome source tests fail: fix the sources before releasing them", file=sys.stderr)
                    return 1
            if args.command == "release":
                for path in release(course, args.names):
                    print(f"released  {path.relative_to(course)}")
            elif args.command == "autograde":
                rows = autograde(course, args.csv)
                print_table(rows)
                print(f"\nscore table written to {args.csv or course / 'scores.csv'}")
        except AssignmentError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
