"""How long the autograder takes for a class: N students x every assignment, graded in parallel.

    python benchmarks/grade_class.py [--students 40] [--jobs 2] [--fresh-python]

Builds a course in a temporary folder (the repository's sources), releases it, hands in the
solutions for every student (so every test runs in full, the slowest case), then times
``python -m grader autograde`` end to end: start-up, the sandboxes, the tests, the gradebook, the
feedback notebooks, the exports (Canvas, Gradescope, similarity) and the table. Prints the
wall-clock time (and the load average before, as other work on the machine slows it) and the
median and slowest notebook of each assignment. The target: 40 students x 5 assignments in 10
minutes on 2 cores (``--jobs 2``). ``--fresh-python`` grades as the grader did before its fork
server: a fresh Python that imports torch in every sandbox.
"""

import argparse
import csv
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parent.parent


def run(course: Path, *args) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "grader", "--course-dir", str(course), *args],
                            capture_output=True, text=True, cwd=REPO)
    if result.returncode != 0:
        sys.exit(f"{' '.join(args)} failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    return result


def hand_in_solutions(course: Path, students: int) -> list:
    names = sorted(p.name for p in (course / "source").iterdir() if p.is_dir())
    for name in names:
        source = nbformat.read(course / "source" / name / f"{name}.ipynb", as_version=4)
        solutions = {c.metadata["nbgrader"]["grade_id"]: c.source for c in source.cells
                     if c.metadata.get("nbgrader", {}).get("solution")}
        release = nbformat.read(course / "release" / name / f"{name}.ipynb", as_version=4)
        for cell in release.cells:
            gid = cell.metadata.get("nbgrader", {}).get("grade_id")
            if gid in solutions:
                cell.source = solutions[gid]
        for i in range(students):
            folder = course / "submitted" / f"student{i:02d}" / name
            folder.mkdir(parents=True)
            nbformat.write(release, str(folder / f"{name}.ipynb"))
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=40)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--fresh-python", action="store_true", help="passed on to autograde")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="grade-class-") as tmp:
        course = Path(tmp) / "course"
        shutil.copytree(REPO / "assignments" / "source", course / "source")
        shutil.copy(REPO / "assignments" / "nbgrader_config.py", course)
        run(course, "release", "--no-validate")
        names = hand_in_solutions(course, args.students)
        load = " ".join(f"{v:.1f}" for v in os.getloadavg())
        start = time.perf_counter()
        run(course, "autograde", "--jobs", str(args.jobs), *(["--fresh-python"] if args.fresh_python else []))
        seconds = time.perf_counter() - start
        with open(course / "scores.csv", newline="") as f:
            rows = list(csv.DictReader(f))
    full = sum(float(r["score"]) == float(r["max_score"]) for r in rows)
    print(f"{args.students} students x {len(names)} assignments, --jobs {args.jobs}"
          f"{' --fresh-python' if args.fresh_python else ''}: "
          f"{seconds:.0f} s wall clock; {full} of {len(rows)} notebooks got full marks; "
          f"load average before: {load} (other work on the machine slows it)")
    for name in names:
        times = sorted(float(r["seconds"]) for r in rows if r["assignment"] == name)
        print(f"  {name:<24} per notebook: median {times[len(times) // 2]:.1f} s, slowest {times[-1]:.1f} s")


if __name__ == "__main__":
    main()
