"""Grade a class: every ``submitted/<student>/<assignment>/``, in parallel, one row each.

Each submission is read once, without following links, into the grader's own copy
(``submissions.py``); a bad one gets a row saying what is wrong and grading goes on with the
others, whatever went wrong. Scores go to nbgrader's gradebook, feedback notebooks and
Gradescope's ``results.json`` to ``autograded/``, the table to ``scores.csv``, the Canvas import
to ``canvas.csv`` and pairs of similar answers to ``similarity.csv``.
"""

import os
from dataclasses import dataclass, replace
from pathlib import Path

import nbformat

from grader.course import (
    REPO,
    AssignmentError,
    grading_settings,
    load_config,
    nbgrader_meta,
    released_assignments,
)
from grader.grading import Job, Outcome, grade_notebook
from grader.sandbox import Limits, bwrap_problem
from grader.submissions import InvalidSubmission, grade_ids, links_in, parse_notebook, read_bytes
from grader.table import Row
from grader.text import first_line


@dataclass(frozen=True)
class Grading:
    """How ``autograde`` runs: the limits, the sandbox (or not), the number of parallel workers."""

    limits: Limits = Limits()
    sandboxed: bool = True
    jobs: int = 0  # 0: one per CPU core
    forked: bool = True  # False: a fresh Python in every sandbox (``--fresh-python``)

    def header(self) -> str:
        isolation = "sandbox (bubblewrap)" if self.sandboxed else "UNSANDBOXED (--unsandboxed)"
        return f"graded in: {isolation}; limits: {self.limits.describe()}"


def read_submission(folder: Path, expected: dict, row: Row):
    """The notebooks of a submission folder, ``{name: notebook}``, read without following links;
    ``None`` (with ``row`` saying why) when there is nothing to grade."""
    if not os.path.lexists(folder):
        row.status = "not submitted"
        return None
    links = links_in(folder)
    if links:
        row.status = f"not graded: {', '.join(links)} is a symbolic link"
        row.details = ("the grader reads no link (it could point at the instructor's or another "
                       "student's files); ask the student for the notebook itself")
        return None
    notebooks, missing, notes = {}, [], []
    for name, cells in expected.items():
        path = folder / f"{name}.ipynb"
        if not path.exists():
            missing.append(path.name)
            continue
        try:
            nb = notebooks[name] = parse_notebook(read_bytes(path), path.name)
        except InvalidSubmission as e:
            row.status, row.details = "invalid notebook", str(e)
            return None
        present = grade_ids(nb)
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
        others = sorted(p.name for p in folder.glob("*.ipynb") if p.name not in {f"{n}.ipynb" for n in expected})
        hint = (f"; found {', '.join(others)}: if that is the student's work, rename it to "
                f"{missing[0]} and run `make autograde` again" if others else "")
        row.details = "; ".join(filter(None, [f"missing {', '.join(missing)}{hint}", row.details]))
        if not notebooks:
            row.status = "missing notebook"
    return notebooks or None


def class_jobs(course: Path, students: list, released: dict, grading: Grading) -> tuple:
    """The score table's rows and a ``(row, Job)`` for each notebook to grade."""
    submitted = course / "submitted"
    rows, jobs = [], []
    for student in students:
        folder = submitted / student
        if folder.is_symlink():
            rows.append(Row(student, "*", status=f"not graded: submitted/{student} is a symbolic link",
                            details="the grader reads no link; ask for the student's folder itself"))
            continue
        for other in sorted(p for p in folder.iterdir()
                            if not p.name.startswith(".") and p.name not in released and (p.is_dir() or p.is_symlink())):
            rows.append(Row(student, other.name, status="unknown assignment", details=(
                f"no released assignment named {other.name}; they are {', '.join(released)}")))
        for assignment, (max_score, notebooks) in released.items():
            row = Row(student, assignment, max_score=max_score,
                      isolation="sandbox" if grading.sandboxed else "UNSANDBOXED")
            rows.append(row)
            try:
                found = read_submission(folder / assignment, notebooks, row) or {}
            except Exception as e:  # noqa: BLE001 (whatever goes wrong is this submission's problem)
                row.status, found = f"not graded: the grader could not read it ({type(e).__name__}: {first_line(e, 200)})", {}
            for name, nb in found.items():
                settings = grading_settings(course, assignment, name)
                limits = replace(grading.limits, call_s=float(settings["call_s"])) if settings["call_s"] else grading.limits
                jobs.append((row, Job(student, assignment, name, nb, notebooks[name], settings["withheld"], limits,
                                      grading.sandboxed, REPO, settings["autograd"], grading.forked)))
    return rows, jobs


def autograde(course: Path, grading: Grading = Grading()) -> tuple:
    """Grade every student and assignment; returns the rows and the jobs graded (whose
    notebooks the exports read). Writes feedback notebooks and the gradebook."""
    from nbgrader.apps import NbGraderAPI
    if grading.sandboxed and (problem := bwrap_problem(REPO)):
        raise AssignmentError(f"{problem}. Grading runs each student's code in that sandbox; to grade "
                              "without it (students' code could then read and change anything you can) "
                              "pass --unsandboxed, which the score table records")
    submitted = course / "submitted"
    students = sorted(p.name for p in submitted.iterdir() if (p.is_dir() or p.is_symlink())
                      and not p.name.startswith(".")) if submitted.is_dir() else []
    if not students:
        raise AssignmentError(f"no submissions in {submitted}: put each student's work in "
                              "submitted/<student>/<assignment>/<notebook>.ipynb")
    with start_workers(grading.jobs, grading.sandboxed and grading.forked) as pool:  # they start up while the submissions are read
        db_url = NbGraderAPI(config=load_config(course)).coursedir.db_url
        released = released_assignments(db_url, course)
        if not released:
            raise AssignmentError(f"no assignment is in the gradebook {db_url}: run "
                                  "`make assignments` (python -m grader release) before grading")
        from nbgrader.api import Gradebook

        rows, jobs = class_jobs(course, students, released, grading)
        with Gradebook(db_url) as gb:  # one connection for the class (opening one costs 30 ms)
            for row, job, outcome in run_jobs(jobs, pool):
                try:
                    record(course, gb, row, job, outcome)
                except Exception as e:  # noqa: BLE001 (one submission's problem, the others are recorded)
                    gb.db.rollback()
                    row.status = f"not graded: the grader could not record it ({type(e).__name__}: {first_line(e, 200)})"
    return rows, jobs


def pin_worker(counter, forked: bool = True) -> None:
    """Run this grading worker (and the sandboxes it starts) on a core of its own, and import
    what grading a notebook needs (2 s of CPU) and start its fork server (3 s) before the first
    notebook arrives."""
    with counter.get_lock():
        index, counter.value = counter.value, counter.value + 1
    cores = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cores[index % len(cores)]})
    try:
        import torch.fx.experimental.symbolic_shapes  # noqa: F401  (autograd's first backward imports it)

        import course_lib.checks  # noqa: F401

        if forked:
            from grader.sandbox import fork_server
            fork_server().start()
    except Exception:  # noqa: BLE001 (only a head start: the first notebook imports what it needs)
        pass


def start_workers(workers: int, forked: bool = True):
    """The grading workers (one per core unless ``workers``), started now: the executor forks
    them all at its first task."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    counter = multiprocessing.Value("i", 0)
    pool = ProcessPoolExecutor(max_workers=workers or len(os.sched_getaffinity(0)),
                               mp_context=multiprocessing.get_context("fork"),
                               initializer=pin_worker, initargs=(counter, forked))
    pool.submit(int)
    return pool


def run_jobs(jobs: list, pool):
    """``(row, job, outcome)`` for each job, graded by ``pool``'s workers, as they finish."""
    from concurrent.futures import as_completed
    futures = {pool.submit(grade_notebook, job): (row, job) for row, job in jobs}
    for future in as_completed(futures):
        row, job = futures[future]
        print(f"graded {first_line(repr(job.student))} / {job.assignment}", flush=True)
        try:
            outcome = future.result()
        except Exception as e:  # noqa: BLE001 (a bug of ours, not the student's: say so, grade the rest)
            outcome = Outcome(refused=f"grader error {type(e).__name__}: {first_line(e, 200)}")
        yield row, job, outcome


def record(course: Path, gb, row: Row, job: Job, outcome: Outcome) -> None:
    """Write one graded notebook to ``autograded/``, its scores to the gradebook ``gb`` (an open
    ``nbgrader.api.Gradebook``) and to ``row``."""
    from course_lib.runlog import atomic_write

    row.seconds += round(outcome.seconds, 1)
    row.flags = "; ".join(filter(None, [row.flags] + outcome.flags))
    if outcome.refused:
        row.status = f"not graded: {outcome.refused}"
        return
    if outcome.feedback is not None:
        path = course / "autograded" / job.student / job.assignment / f"{job.notebook}.ipynb"
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, nbformat.writes(outcome.feedback))
    gb.update_or_create_student(job.student)
    submission = gb.update_or_create_submission(job.assignment, job.student)
    grades = {g.name: g for g in gb.find_submission_notebook(job.notebook, job.assignment, job.student).grades}
    for gid, score in outcome.scores.items():
        grades[gid].auto_score = score  # one query for the notebook's grades, not one per grade
    gb.db.commit()
    row.score = submission.score
    failed = [gid for gid, score in outcome.scores.items() if score < job.cells[gid]["points"]]
    row.failed_tests += failed
    row.tests += outcome.tests
    if outcome.problems:
        row.status = "; ".join([row.status] + outcome.problems)
    if not outcome.scores and not outcome.problems:
        row.status = "not graded"
    row.details = "; ".join(filter(None, [row.details] + outcome.notes + [
        f"{gid} (0/{job.cells[gid]['points']:g}): {first_failure(outcome.failures.get(gid, ''))}" for gid in failed]))


def first_failure(error: str) -> str:
    """The first FAIL line of a check's report, or the error's first line."""
    fails = [ln.strip() for ln in error.splitlines() if ln.strip().startswith("FAIL")]
    return " ".join(fails[0].split()) if fails else first_line(error).rstrip(": ")


def answers_by_assignment(jobs: list) -> dict:
    """``{(assignment, notebook): {student: the code of the answer cells}}`` from the grader's copies."""
    found = {}
    for _, job in jobs:
        answers = [c.source for c in job.nb.cells
                   if c.cell_type == "code" and job.cells.get(_gid(c), {}).get("kind") == "answer"]
        found.setdefault((job.assignment, job.notebook), {})[job.student] = "\n\n".join(answers)
    return found


def _gid(cell):
    gid = nbgrader_meta(cell).get("grade_id")
    return gid if isinstance(gid, str) else None
