"""Graded assignments with nbgrader: check the sources, release them, autograde submissions.

    python -m grader validate  [NAME ...]   run each source notebook: every test must pass
    python -m grader release   [NAME ...]   validate, then write the student versions
    python -m grader autograde [--jobs N] [--unsandboxed] ...   grade, print the table

(``tools/assignments.py`` is the same command.) ``autograde`` writes the score table
(``scores.csv``), a Canvas gradebook import (``canvas.csv``), Gradescope's ``results.json`` beside
each feedback notebook in ``autograded/`` and a similarity report (``similarity.csv``).
"""

import argparse
import csv
import io
import sys
import tempfile
import warnings
from pathlib import Path

import nbformat

from grader.course import COURSE, AssignmentError, print_validation, release, use_this_environment, validate
from grader.sandbox import Limits
from grader.text import one_line


def write_outputs(course: Path, rows: list, jobs: list, csv_path: Path, gradebook: tuple | None = None) -> list:
    """The score table, the Canvas import, results.json files and the similarity report;
    ``gradebook``: ``(path, text)`` of Canvas's export, read (and checked) before grading."""
    from course_lib.runlog import atomic_write
    from grader.autograde import answers_by_assignment
    from grader.exports import canvas_csv, write_gradescope
    from grader.similarity import similar_pairs
    from grader.table import write_csv

    write_csv(rows, csv_path)
    canvas, unknown = canvas_csv(rows, gradebook[1] if gradebook else None)
    atomic_write(csv_path.with_name("canvas.csv"), canvas)
    if unknown:
        print(f"warning: {len(unknown)} student folder(s) not in the Canvas gradebook {gradebook[0]} (matched by "
              f"SIS User ID, SIS Login ID or ID): {', '.join(one_line(s) for s in unknown[:10])}"
              f"{' ...' if len(unknown) > 10 else ''}; their rows in canvas.csv carry the folder name only",
              file=sys.stderr)
    write_gradescope(course, rows)
    pairs = []
    for (assignment, notebook), answers in answers_by_assignment(jobs).items():
        release_nb = course / "release" / assignment / f"{notebook}.ipynb"
        stubs = "\n\n".join(c.source for c in nbformat.read(release_nb, as_version=4).cells
                            if c.cell_type == "code") if release_nb.is_file() else ""
        pairs += [(assignment, *pair) for pair in similar_pairs(answers, stubs)]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["assignment", "student_a", "student_b", "share_a", "share_b"])
    writer.writerows([a, one_line(s), one_line(t), f"{x:.2f}", f"{y:.2f}"] for a, s, t, x, y in pairs)
    atomic_write(csv_path.with_name("similarity.csv"), out.getvalue())
    return pairs


def print_similar(pairs: list) -> None:
    if pairs:
        print("\nsimilar answers (copydetect; read these side by side):")
        for assignment, a, b, share_a, share_b in pairs:
            print(f"  {assignment}: {one_line(a)} and {one_line(b)} share {share_a:.0%} / {share_b:.0%} of their code")


def parser() -> argparse.ArgumentParser:
    parse = argparse.ArgumentParser(prog="python -m grader", description=__doc__.splitlines()[0])
    parse.add_argument("--course-dir", type=Path, default=COURSE,
                       help="the nbgrader course directory (default: assignments/)")
    sub = parse.add_subparsers(dest="command", required=True)
    for name, text in (("validate", "run the source notebooks; every test must pass"),
                       ("release", "validate, then generate the student versions into release/")):
        p = sub.add_parser(name, help=text)
        p.add_argument("names", nargs="*", help="assignments (default: every one in source/)")
    sub.choices["release"].add_argument("--no-validate", action="store_true",
                                        help="skip running the source notebooks first")
    grade = sub.add_parser("autograde", help="grade submitted/<student>/<assignment>/ and print the scores")
    grade.add_argument("--csv", type=Path, help="where to write the score table (default: <course>/scores.csv; "
                                                "canvas.csv and similarity.csv go beside it)")
    grade.add_argument("--canvas-gradebook", type=Path, metavar="FILE",
                       help="the course's gradebook exported from Canvas (Grades > Export): canvas.csv then "
                            "carries each student's Canvas ids and each existing assignment's column id")
    grade.add_argument("--jobs", type=int, default=0, help="notebooks graded at once (default: one per CPU core)")
    grade.add_argument("--cell-timeout", type=float, default=Limits.cell_s, metavar="S",
                       help=f"seconds of CPU one answer cell may use (default {Limits.cell_s:g})")
    grade.add_argument("--call-timeout", type=float, default=Limits.call_s, metavar="S",
                       help=f"seconds of CPU one call of the student's code from a test may use (default "
                            f"{Limits.call_s:g}; a notebook's metadata.grading.call_s wins)")
    grade.add_argument("--notebook-timeout", type=float, default=Limits.notebook_s, metavar="S",
                       help=f"CPU seconds one notebook may use in all, cells and calls together (default {Limits.notebook_s:g})")
    grade.add_argument("--unsandboxed", action="store_true",
                       help="run students' code without bubblewrap (it can then read and change your "
                            "files); the score table records it")
    grade.add_argument("--fresh-python", action="store_true",
                       help="start a fresh Python (which imports torch) in every sandbox, instead of forking "
                            "each student's process from one that has imported it (slower: about 3 s of CPU "
                            "per notebook)")
    return parse


def run(args) -> int:
    from grader.autograde import Grading, autograde
    from grader.table import print_table

    course = args.course_dir.resolve()
    if args.command in ("validate", "release") and not getattr(args, "no_validate", False):
        if not print_validation(validate(course, args.names)):
            print("\nsome source tests fail: fix the sources before releasing them", file=sys.stderr)
            return 1
    if args.command == "release":
        for path in release(course, args.names):
            print(f"released  {path.relative_to(course)}")
    elif args.command == "autograde":
        if args.jobs < 0 or min(args.cell_timeout, args.call_timeout, args.notebook_timeout) <= 0:
            raise AssignmentError("--jobs must be >= 0 and the timeouts > 0 seconds, got "
                                  f"{args.jobs}, {args.cell_timeout:g}, {args.call_timeout:g}, {args.notebook_timeout:g}")
        grading = Grading(Limits(cell_s=args.cell_timeout, call_s=args.call_timeout, notebook_s=args.notebook_timeout),
                          not args.unsandboxed, args.jobs, not args.fresh_python)
        gradebook = None
        if args.canvas_gradebook is not None:  # read it before grading: a bad file costs nothing
            from grader.exports import read_canvas_gradebook
            try:
                text = args.canvas_gradebook.read_text(encoding="utf-8-sig")
                read_canvas_gradebook(text)
            except (OSError, UnicodeDecodeError, ValueError, csv.Error) as error:
                raise AssignmentError(f"--canvas-gradebook {args.canvas_gradebook}: {error}") from None
            gradebook = (args.canvas_gradebook, text)
        rows, jobs = autograde(course, grading)
        csv_path = args.csv or course / "scores.csv"
        pairs = write_outputs(course, rows, jobs, csv_path, gradebook)
        print_table(rows, grading.header())
        print_similar(pairs)
        print(f"\nscore table written to {csv_path}; Canvas import: {csv_path.with_name('canvas.csv')}; "
              f"Gradescope: autograded/<student>/<assignment>/results.json")
    return 0


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    # Noise from inside nbgrader that an instructor can do nothing about: its gradebook session
    # warns while creating a student, and a test cell it restores has no cell id.
    warnings.filterwarnings("ignore", message=".*not in session.*")
    warnings.filterwarnings("ignore", message="Cell is missing an id field")
    with tempfile.TemporaryDirectory(prefix="nbgrader-kernels-") as workdir:
        use_this_environment(Path(workdir))
        try:
            return run(args)
        except AssignmentError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print(f"\ninterrupted: {args.command} stopped. Notebooks already graded are in the gradebook "
                  "with their feedback; no score table or export was written. The same command "
                  "again grades every submission anew.", file=sys.stderr)
            return 130


if __name__ == "__main__":
    sys.exit(main())
