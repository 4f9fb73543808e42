"""The score table: one schema (``Row``) for the CSV, the printed table and the exports.

Every text field is passed through ``one_line`` on its way out, so what a student controls
(names, messages) cannot move the instructor's cursor or add a line to the table.
"""

from dataclasses import asdict, dataclass, field
from pathlib import Path

from grader.text import one_line

COLUMNS = ("student", "assignment", "score", "max_score", "status", "failed_tests", "details", "flags",
           "isolation", "seconds")


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
    flags: str = ""  # suspicious code, for the instructor to look at; it does not change the score
    isolation: str = "sandbox"  # or "UNSANDBOXED" (--unsandboxed)
    seconds: float = 0.0
    tests: list = field(default_factory=list)  # per test: {"name", "score", "max_score", "output", "hidden"}

    def safe(self) -> dict:
        """The row's columns as printable one-line text (numbers kept as numbers)."""
        values = {k: v for k, v in asdict(self).items() if k in COLUMNS}
        values["failed_tests"] = ";".join(self.failed_tests)
        return {k: one_line(v) if isinstance(v, str) else v for k, v in values.items()}


def write_csv(rows: list, path: Path) -> None:
    """Write the table next to its final place, then rename: never half a file."""
    import pandas as pd

    from course_lib.runlog import atomic_write

    table = pd.DataFrame([r.safe() for r in rows], columns=list(COLUMNS))
    atomic_write(path, table.to_csv(index=False))


def print_table(rows: list, header: str) -> None:
    safe = [r.safe() for r in rows]
    width = {k: max([len(k)] + [len(s[k]) for s in safe]) for k in ("student", "assignment")}
    print(f"\n{header}")
    print(f"\n{'student':<{width['student']}}  {'assignment':<{width['assignment']}}  "
          f"{'score':>11}  {'time':>6}  status  [failed tests]")
    for s in safe:
        failed = f"  [{s['failed_tests'].replace(';', ', ')}]" if s["failed_tests"] else ""
        print(f"{s['student']:<{width['student']}}  {s['assignment']:<{width['assignment']}}  "
              f"{s['score']:>5g} / {s['max_score']:<3g}  {s['seconds']:>5.1f}s  {s['status']}{failed}")
    for title, key in (("notes", "details"), ("suspicious code (look at these notebooks)", "flags")):
        noted = [s for s in safe if s[key]]
        if noted:
            print(f"\n{title}:")
            for s in noted:
                print(f"  {s['student']} / {s['assignment']}: {s[key]}")
