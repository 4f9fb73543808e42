"""Graded assignments with nbgrader: check the sources, release them, autograde submissions.

    python tools/assignments.py validate  [NAME ...]   run each source notebook: every test must pass
    python tools/assignments.py release   [NAME ...]   validate, then write the student versions
    python tools/assignments.py autograde [--jobs N] [--unsandboxed] ...   grade, print the table

The course directory (``--course-dir``, default ``assignments/``) is an ordinary nbgrader course:
sources in ``source/<assignment>/``, student versions in ``release/<assignment>/``, submissions in
``submitted/<student>/<assignment>/``, and the sqlite gradebook ``gradebook.db`` that records the
test cells (hidden tests included) at release time and every score at grading time. Its
``nbgrader_config.py`` holds the settings. Validation and release are nbgrader's own Python API.
Grading is ours (``grading.py``, ``sandbox.py``): each student's answer cells run in a bubblewrap
sandbox, the tests in this process; scores go to nbgrader's gradebook and the graded notebooks to
``autograded/``, where nbgrader's feedback command finds them.

Source notebooks are validated in a kernel of *this* Python environment, whatever kernels the
user has registered.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))  # grading.py and sandbox.py, beside this file
from grading import Job, Outcome, grade_notebook  # noqa: E402
from sandbox import Limits, bwrap_problem  # noqa: E402

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
    """One line of the score table: a student's result on one assignment (its one schema)."""

    student: str
    assignment: str
    score: float = 0.0
    max_score: float = 0.0
    status: str = "graded"
    failed_tests: list = field(default_factory=list)
    details: str = ""
    flags: str = ""  # suspicious code, for the instructor to look at; it does not change the score
    isolation: str = "sandbox"  # or "UNSANDBOXED" (--unsandboxed)
    seconds: float = 0.0


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


def withheld_objects(course: Path, assignment: str, notebook: str) -> list:
    """The course_lib solutions this notebook asks the student to write (its ``grading.withheld``)."""
    path = course / "source" / assignment / f"{notebook}.ipynb"
    meta = nbformat.read(path, as_version=4).metadata if path.is_file() else {}
    return list(meta.get("grading", {}).get("withheld", []))


def inspect_submission(folder: Path, expected: dict, row: Row) -> bool:
    """Check a submission folder before grading; fill ``row`` and return whether to grade."""
    if not folder.is_dir():
        row.status = "not submitted"
        return False
    found = {p.name for p in folder.glob("*.ipynb")}
    missing, notes = [], []
    for name, cells in expected.items():
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
        present = {c.get("metadata", {}).get("nbgrader", {}).get("grade_id") for c in nb.cells}
        deleted_tests = [g for g, c in cells.items() if c["kind"] == "test" and g not in present]
        deleted_other = [g for g, c in cells.items() if c["kind"] != "test" and g not in present]
        if deleted_tests:
            row.status = "graded, test cells restored"
            notes.append(f"{path.name}: the student deleted test cells {', '.join(deleted_tests)}; "
                         "they were put back and run")
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


@dataclass(frozen=True)
class Grading:
    """How ``autograde`` runs: the limits, the sandbox (or not), the number of parallel workers."""

    limits: Limits = Limits()
    sandboxed: bool = True
    jobs: int = 0  # 0: one per CPU core


def autograde(course: Path, csv_path: Path = None, grading: Grading = Grading()) -> list:
    """Grade ``submitted/<student>/<assignment>/`` for every student and assignment, in parallel.

    Returns the score table rows and writes them to ``csv_path`` (``<course>/scores.csv``); each
    graded notebook goes to ``autograded/`` and its scores to the gradebook. A bad submission
    gets a row saying what is wrong; grading goes on with the others.
    """
    from nbgrader.apps import NbGraderAPI
    if grading.sandboxed and (problem := bwrap_problem(REPO)):
        raise AssignmentError(f"{problem}. Grading runs each student's code in that sandbox; to grade "
                              "without it (students' code could then read and change anything you can) "
                              "pass --unsandboxed, which the score table records")
    submitted = course / "submitted"
    students = sorted(p.name for p in submitted.iterdir() if p.is_dir() and not p.name.startswith(".")) \
        if submitted.is_dir() else []
    if not students:
        raise AssignmentError(f"no submissions in {submitted}: put each student's work in "
                              "submitted/<student>/<assignment>/<notebook>.ipynb")
    db_url = NbGraderAPI(config=load_config(course)).coursedir.db_url
    released = released_assignments(db_url, course)
    if not released:
        raise AssignmentError(f"no assignment is in the gradebook {db_url}: run "
                              "`make assignments` (python tools/assignments.py release) before grading")
    rows, jobs = [], []
    for student in students:
        for folder in sorted(p for p in (submitted / student).iterdir()
                             if p.is_dir() and not p.name.startswith(".") and p.name not in released):
            rows.append(Row(student, folder.name, status="unknown assignment", details=(
                f"no released assignment named {folder.name}; they are {', '.join(released)}")))
        for assignment, (max_score, notebooks) in released.items():
            row = Row(student, assignment, max_score=max_score,
                      isolation="sandbox" if grading.sandboxed else "UNSANDBOXED")
            rows.append(row)
            if inspect_submission(submitted / student / assignment, notebooks, row):
                jobs += [(row, Job(student, assignment, nb, submitted / student / assignment / f"{nb}.ipynb",
                                   cells, withheld_objects(course, assignment, nb), grading.limits,
                                   grading.sandboxed, REPO))
                         for nb, cells in notebooks.items() if (submitted / student / assignment / f"{nb}.ipynb").is_file()]
    for row, job, outcome in run_jobs(jobs, grading.jobs):
        record(course, db_url, row, job, outcome)
    write_csv(rows, csv_path or course / "scores.csv")
    return rows


def run_jobs(jobs: list, workers: int):
    """``(row, job, outcome)`` for each job, graded by ``workers`` processes as they finish."""
    from concurrent.futures import ProcessPoolExecutor, as_completed
    workers = workers or os.cpu_count() or 1
    with ProcessPoolExecutor(max_workers=min(workers, max(len(jobs), 1))) as pool:
        futures = {pool.submit(grade_notebook, job): (row, job) for row, job in jobs}
        for future in as_completed(futures):
            row, job = futures[future]
            print(f"graded {job.student} / {job.assignment}", flush=True)
            try:
                outcome = future.result()
            except Exception as e:  # a bug of ours, not the student's: say so, grade the rest
                outcome = Outcome(problems=[f"grader error {type(e).__name__}: {_line(e)}"])
            yield row, job, outcome


def record(course: Path, db_url: str, row: Row, job: Job, outcome: Outcome) -> None:
    """Write one graded notebook to ``autograded/``, its scores to the gradebook and to ``row``."""
    from nbgrader.api import Gradebook
    from course_lib.runlog import atomic_write

    if outcome.feedback is not None:
        path = course / "autograded" / job.student / job.assignment / f"{job.notebook}.ipynb"
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, nbformat.writes(outcome.feedback))
    with Gradebook(db_url) as gb:
        gb.update_or_create_student(job.student)
        submission = gb.update_or_create_submission(job.assignment, job.student)
        for gid, score in outcome.scores.items():
            grade = gb.find_grade(gid, job.notebook, job.assignment, job.student)
            grade.auto_score = score
        gb.db.commit()
        row.score = gb.find_submission(job.assignment, job.student).score
        del submission
    failed = [gid for gid, score in outcome.scores.items() if score < job.cells[gid]["points"]]
    row.failed_tests += failed
    if outcome.problems:
        row.status = "; ".join([row.status] + outcome.problems)
    if not outcome.scores and not outcome.problems:
        row.status = "not graded"
    row.flags = "; ".join(filter(None, [row.flags] + outcome.flags))
    row.seconds += round(outcome.seconds, 1)
    row.details = "; ".join(filter(None, [row.details] + outcome.notes + [
        f"{gid} (0/{job.cells[gid]['points']:g}): {first_failure(outcome.failures.get(gid, ''))}" for gid in failed]))


def first_failure(error: str) -> str:
    """The first FAIL line of a check's report, or the error's first line."""
    fails = [ln.strip() for ln in error.splitlines() if ln.strip().startswith("FAIL")]
    return " ".join(fails[0].split()) if fails else _line(error).rstrip(": ")


def write_csv(rows: list, path: Path) -> None:
    """Write the table next to its final place, then rename: never half a file."""
    import pandas as pd
    from course_lib.runlog import atomic_write

    table = pd.DataFrame([{**asdict(r), "failed_tests": ";".join(r.failed_tests)} for r in rows])
    atomic_write(path, table.to_csv(index=False))


def print_table(rows: list, grading: Grading) -> None:
    width = {k: max([len(k)] + [len(str(getattr(r, k))) for r in rows]) for k in ("student", "assignment")}
    isolation = "sandbox (bubblewrap)" if grading.sandboxed else "UNSANDBOXED (--unsandboxed)"
    print(f"\ngraded in: {isolation}; limits: {grading.limits.describe()}")
    print(f"\n{'student':<{width['student']}}  {'assignment':<{width['assignment']}}  "
          f"{'score':>11}  {'time':>6}  status  [failed tests]")
    for r in rows:
        failed = f"  [{', '.join(r.failed_tests)}]" if r.failed_tests else ""
        print(f"{r.student:<{width['student']}}  {r.assignment:<{width['assignment']}}  "
              f"{r.score:>5g} / {r.max_score:<3g}  {r.seconds:>5.1f}s  {r.status}{failed}")
    for title, key in (("notes", "details"), ("suspicious code (look at these notebooks)", "flags")):
        noted = [r for r in rows if getattr(r, key)]
        if noted:
            print(f"\n{title}:")
            for r in noted:
                print(f"  {r.student} / {r.assignment}: {getattr(r, key)}")


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
    grade.add_argument("--jobs", type=int, default=0, help="notebooks graded at once (default: one per CPU core)")
    grade.add_argument("--cell-timeout", type=float, default=Limits.cell_s, metavar="S",
                       help=f"seconds one answer cell or one test may run (default {Limits.cell_s:g})")
    grade.add_argument("--notebook-timeout", type=float, default=Limits.notebook_s, metavar="S",
                       help=f"seconds one notebook may take in all (default {Limits.notebook_s:g})")
    grade.add_argument("--unsandboxed", action="store_true",
                       help="run students' code without bubblewrap (it can then read and change your "
                            "files); the score table records it")
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
                if args.jobs < 0 or args.cell_timeout <= 0 or args.notebook_timeout <= 0:
                    raise AssignmentError("--jobs must be >= 0 and the timeouts > 0 seconds, got "
                                          f"{args.jobs}, {args.cell_timeout:g}, {args.notebook_timeout:g}")
                grading = Grading(Limits(args.cell_timeout, args.notebook_timeout), not args.unsandboxed, args.jobs)
                rows = autograde(course, args.csv, grading)
                print_table(rows, grading)
                print(f"\nscore table written to {args.csv or course / 'scores.csv'}")
        except AssignmentError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
