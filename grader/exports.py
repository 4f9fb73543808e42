"""Grades out of the grader: a CSV Canvas's gradebook imports, Gradescope's ``results.json`` per
submission, and a similarity report per assignment (copydetect) for the instructor.

Canvas: Grades > Import takes a CSV whose first columns are ``Student, ID, SIS User ID, Section``
and then one column per assignment; a column named as an existing assignment ("name (id)", as
Canvas exports it) updates it, a new name creates it. We know the students by their folder in
``submitted/``, which goes to ``Student`` and ``SIS User ID`` (name the folders by SIS user ID, as
nbgrader's own exchange does, and the rows match); ``ID`` and ``Section`` stay empty, and the
columns are named after the assignments (Canvas then creates them on the first import).
Given the course's gradebook as Canvas exports it (``--canvas-gradebook FILE``: Grades > Export),
each student folder is matched to its row by SIS User ID, SIS Login ID or Canvas ID, the row's
identity columns (``Student, ID, SIS User ID, SIS Login ID, Section``) are copied from there, and
an assignment that exists in Canvas gets its column's exact name with the id, ``"name (1234)"``,
so the import updates that assignment instead of creating another.

Gradescope: ``results.json`` as its autograder specification defines it
(https://gradescope-autograders.readthedocs.io/en/latest/specs/); ``GRADESCOPE_SCHEMA`` is that
format as a JSON schema, which the writer checks every file against.
"""

import csv
import io
import json
import re
from pathlib import Path

from grader.text import one_line

CANVAS_COLUMNS = ("Student", "ID", "SIS User ID", "Section")
VISIBILITY = ("hidden", "after_due_date", "after_published", "visible")
_TEST = {
    "type": "object", "additionalProperties": False, "required": ["score", "max_score"],
    "properties": {"score": {"type": "number"}, "max_score": {"type": "number"},
                   "status": {"enum": ["passed", "failed"]}, "name": {"type": "string"},
                   "name_format": {"enum": ["text", "html", "simple_format", "md", "ansi"]},
                   "number": {"type": "string"}, "output": {"type": "string"},
                   "output_format": {"enum": ["text", "html", "simple_format", "md", "ansi"]},
                   "tags": {"type": "array", "items": {"type": "string"}},
                   "visibility": {"enum": list(VISIBILITY)}, "extra_data": {"type": "object"}},
}
GRADESCOPE_SCHEMA = {
    "$schema": "http://json-schema.org/draft-07/schema#", "type": "object", "additionalProperties": False,
    "anyOf": [{"required": ["score"]}, {"required": ["tests"]}],
    "properties": {"score": {"type": "number"}, "execution_time": {"type": "number"},
                   "output": {"type": "string"},
                   "output_format": {"enum": ["text", "html", "simple_format", "md", "ansi"]},
                   "test_output_format": {"enum": ["text", "html", "simple_format", "md", "ansi"]},
                   "test_name_format": {"enum": ["text", "html", "simple_format", "md", "ansi"]},
                   "visibility": {"enum": list(VISIBILITY)}, "stdout_visibility": {"enum": list(VISIBILITY)},
                   "extra_data": {"type": "object"}, "tests": {"type": "array", "items": _TEST},
                   "leaderboard": {"type": "array"}},
}


IDENTITY = ("Student", "ID", "SIS User ID", "SIS Login ID", "Section")  # what an export names a student by
MATCH_BY = ("SIS User ID", "SIS Login ID", "ID")  # compared with the folder name, in this order


def read_canvas_gradebook(text: str) -> tuple:
    """``(identity columns, {key: that student's identity}, {assignment name: column name})`` from
    a gradebook Canvas exported; raises ``ValueError`` when ``text`` is not one."""
    table = list(csv.reader(io.StringIO(text.lstrip("\ufeff"))))
    if not table or not {"Student", "ID"} <= set(table[0]):
        raise ValueError("not a Canvas gradebook export: its first row must name the columns Student and ID "
                         "(Canvas: Grades > Export > Export Entire Gradebook)")
    header = table[0]
    columns = [c for c in IDENTITY if c in header]
    students = {}
    for values in table[1:]:
        row = dict(zip(header, values))
        if "Points Possible" in row.get("Student", ""):
            continue
        for key in MATCH_BY:
            if row.get(key, "").strip():
                students.setdefault(row[key].strip(), [row.get(c, "") for c in columns])
    named = {}
    for column in header:
        match = re.fullmatch(r"(.+) \((\d+)\)", column.strip())
        if match:
            named.setdefault(match.group(1), column)
    return columns, students, named


def canvas_csv(rows: list, gradebook: str | None = None) -> tuple:
    """``(csv text, students not found in the gradebook)``: the score table as a Canvas gradebook
    import, a row per student, a column per assignment (empty where nothing was graded, so an
    import does not overwrite a grade with 0). ``gradebook``: the text of Canvas's export, whose
    ids the import then uses (module docstring)."""
    assignments = sorted({r.assignment for r in rows if r.max_score})
    scores = {(r.student, r.assignment): r for r in rows}
    columns, known, named = (list(CANVAS_COLUMNS), {}, {}) if gradebook is None else read_canvas_gradebook(gradebook)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*columns, *(one_line(named.get(a, a)) for a in assignments)])
    writer.writerow(["Points Possible", *[""] * (len(columns) - 1), *(
        f"{next(r.max_score for r in rows if r.assignment == a):g}" for a in assignments)])
    unknown = []
    for student in sorted({r.student for r in rows}):
        cells = [scores.get((student, a)) for a in assignments]
        identity = known.get(student)
        if identity is None:
            if gradebook is not None:
                unknown.append(student)
            identity = [student if c in ("Student", "SIS User ID") else "" for c in columns]
        writer.writerow([*(one_line(v) for v in identity), *(
            f"{r.score:g}" if r and r.status.startswith("graded") else "" for r in cells)])
    return out.getvalue(), unknown


def gradescope_results(row) -> dict:
    """One submission in Gradescope's ``results.json`` format: a test per graded test cell
    (hidden tests ``after_published``: their name, points and message, never their code)."""
    tests = [{"name": t["name"], "score": float(t["score"]), "max_score": float(t["max_score"]),
              "status": "passed" if t["score"] >= t["max_score"] else "failed",
              "output": one_line(t["output"]) if t["output"] else "",
              "visibility": "after_published" if t["hidden"] else "visible"} for t in row.tests]
    return {"score": float(row.score), "execution_time": round(float(row.seconds), 1),
            "output": one_line(f"{row.status}" + (f"; {row.details}" if row.details else "")),
            "visibility": "visible", "stdout_visibility": "hidden", "tests": tests}


def check_gradescope(results: dict) -> None:
    """Raise ``jsonschema.ValidationError`` unless ``results`` follows Gradescope's format."""
    import jsonschema
    jsonschema.validate(results, GRADESCOPE_SCHEMA)


def write_gradescope(course: Path, rows: list) -> list:
    """``autograded/<student>/<assignment>/results.json`` for every graded submission."""
    from course_lib.runlog import atomic_write
    written = []
    for row in rows:
        folder = course / "autograded" / row.student / row.assignment
        if row.status.startswith("graded") and folder.is_dir() and not folder.is_symlink():
            results = gradescope_results(row)
            check_gradescope(results)
            atomic_write(folder / "results.json", json.dumps(results, indent=1))
            written.append(folder / "results.json")
    return written
