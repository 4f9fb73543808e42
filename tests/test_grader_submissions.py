"""Reading submissions (``grader.submissions``): links are refused, never followed; every
malformed file, crafted or mangled at random, is one student's ``InvalidSubmission`` or a
notebook the grader can pick cells from and write feedback for, never another exception."""

import json
import os
import random
from pathlib import Path

import nbformat
import pytest

from grader.autograde import read_submission
from grader.grading import Job, Outcome, feedback_notebook, pick_cells, suspicious
from grader.sandbox import Limits
from grader.submissions import InvalidSubmission, links_in, parse_notebook, read_bytes
from grader.table import Row

REPO = Path(__file__).resolve().parent.parent
SOURCE = sorted((REPO / "assignments" / "source").glob("*/*.ipynb"))[0]  # a real notebook, metadata and all
BASE = json.loads(SOURCE.read_text(encoding="utf-8"))


def cells_of(nb) -> dict:
    """The gradebook's view of ``nb``: {grade_id: kind, source, points}."""
    found = {}
    for cell in nb["cells"]:
        meta = cell["metadata"].get("nbgrader", {})
        if cell["cell_type"] == "code" and meta.get("grade_id"):
            kind = "answer" if meta.get("solution") else "test" if meta.get("grade") else "setup"
            found[meta["grade_id"]] = {"kind": kind, "source": "".join(cell["source"]), "points": meta.get("points", 0.0)}
    return found


CELLS = cells_of(BASE)


def crafted() -> dict:
    """The malformed files of issue 23, each as bytes."""
    no_cells = {k: v for k, v in BASE.items() if k != "cells"}
    null_meta = json.loads(json.dumps(BASE))
    null_meta["cells"][0]["metadata"] = {"nbgrader": None}
    no_source = json.loads(json.dumps(BASE))
    answer = next(c for c in no_source["cells"] if c["metadata"].get("nbgrader", {}).get("solution"))
    del answer["source"]
    return {"no_cells": json.dumps(no_cells).encode(), "null_nbgrader": json.dumps(null_meta).encode(),
            "deep_array": b"[" * 100_000 + b"]" * 100_000, "no_source": json.dumps(no_source).encode(),
            "cut_off": json.dumps(BASE).encode()[:5000], "not_utf8": b"\xff\xfe{}", "empty": b""}


def mutate(value, rng: random.Random, depth: int = 0):
    """``value`` with one random change somewhere inside: a key dropped, a value replaced by one
    of another type, a list item duplicated or dropped."""
    junk = [None, 0, -1, 1e308, "", "x" * 50, [], {}, [[[]]], {"nbgrader": None}, True]
    if isinstance(value, dict) and value and rng.random() < 0.8:
        key = rng.choice(sorted(value))
        roll = rng.random()
        if roll < 0.2:
            return {k: v for k, v in value.items() if k != key}
        if roll < 0.45 or depth > 6:
            return {**value, key: rng.choice(junk)}
        return {**value, key: mutate(value[key], rng, depth + 1)}
    if isinstance(value, list) and value and rng.random() < 0.8:
        i = rng.randrange(len(value))
        roll = rng.random()
        if roll < 0.2:
            return value[:i] + value[i + 1:]
        if roll < 0.35:
            return value[:i] + [value[i]] + value[i:]
        if roll < 0.55 or depth > 6:
            return value[:i] + [rng.choice(junk)] + value[i + 1:]
        return value[:i] + [mutate(value[i], rng, depth + 1)] + value[i + 1:]
    return rng.choice(junk)


class NoRun:
    """What ``feedback_notebook`` reads of a student's run, when nothing ran."""

    results, skipped = {}, {}


def grade_without_running(nb):
    """Everything the grader does with a parsed notebook short of running it."""
    job = Job("student", "a", "nb", nb, CELLS, [], Limits(), True, REPO)
    outcome = Outcome()
    program = pick_cells(job, nb, outcome)
    for index, _kind, source, _ in program:
        suspicious(index, source)
    tests = {gid: ([], "") for gid, c in CELLS.items() if c["kind"] == "test"}
    return nbformat.writes(feedback_notebook(job, nb, NoRun(), tests, outcome))


@pytest.mark.parametrize("case", sorted(set(crafted()) - {"null_nbgrader"}))
def test_each_crafted_file_is_an_invalid_notebook(case):
    with pytest.raises(InvalidSubmission, match=r"^nb.ipynb is not a valid notebook file \(.+\); ask the student"):
        parse_notebook(crafted()[case], "nb.ipynb")


def test_null_nbgrader_metadata_is_a_cell_without_nbgrader_metadata():
    nb = parse_notebook(crafted()["null_nbgrader"], "nb.ipynb")  # valid for nbformat's schema
    outcome = Outcome()
    pick_cells(Job("student", "a", "nb", nb, CELLS, [], Limits(), True, REPO), nb, outcome)
    first = BASE["cells"][0]["metadata"].get("nbgrader", {}).get("grade_id")
    assert first not in outcome.graded_copy and len(outcome.graded_copy) == len(CELLS) - bool(first)
    assert "cells" in grade_without_running(nb)


def test_random_mutations_never_raise_anything_else():
    rng = random.Random(23)
    outcomes = {"invalid": 0, "graded": 0}
    for _ in range(300):
        data = json.dumps(mutate(BASE, rng)).encode()
        try:
            nb = parse_notebook(data, "nb.ipynb")
        except InvalidSubmission:
            outcomes["invalid"] += 1
            continue
        assert "cells" in grade_without_running(nb)
        outcomes["graded"] += 1
    assert min(outcomes.values()) > 20, outcomes  # both paths exercised


def test_the_real_notebook_reads_and_every_answer_is_picked():
    nb = parse_notebook(SOURCE.read_bytes())
    job = Job("student", "a", "nb", nb, CELLS, [], Limits(), True, REPO)
    program = pick_cells(job, nb, Outcome())
    assert sorted(gid for *_, gid in program) == sorted(g for g, c in CELLS.items() if c["kind"] != "test")


def submission(tmp_path: Path) -> Path:
    folder = tmp_path / "submitted" / "alice" / "a"
    folder.mkdir(parents=True)
    return folder


@pytest.mark.parametrize("link", ["file", "folder", "inner"])
def test_a_link_anywhere_in_a_submission_is_refused_and_named(tmp_path, link):
    secret = tmp_path / "source.ipynb"
    secret.write_bytes(SOURCE.read_bytes())
    folder = submission(tmp_path)
    if link == "file":
        (folder / "nb.ipynb").symlink_to(secret)
        named = "a/nb.ipynb"
    elif link == "folder":
        folder.rmdir()
        (tmp_path / "elsewhere").mkdir()
        folder.symlink_to(tmp_path / "elsewhere")
        named = "a"
    else:
        (folder / "nb.ipynb").write_bytes(SOURCE.read_bytes())
        (folder / "data").mkdir()
        (folder / "data" / "x").symlink_to("/etc/passwd")
        named = "a/data/x"
    assert links_in(folder) == [named]
    row = Row("alice", "a")
    assert read_submission(folder, {"nb": CELLS}, row) is None
    assert row.status == f"not graded: {named} is a symbolic link"
    assert "reads no link" in row.details


def test_a_link_swapped_in_after_the_check_is_not_followed(tmp_path):
    folder = submission(tmp_path)
    (folder / "nb.ipynb").symlink_to(SOURCE)
    with pytest.raises(InvalidSubmission, match="nb.ipynb cannot be read .*not a plain file"):
        read_bytes(folder / "nb.ipynb")
    os.mkfifo(folder / "fifo.ipynb")
    with pytest.raises(InvalidSubmission, match="fifo.ipynb is not a plain file"):
        read_bytes(folder / "fifo.ipynb")


def test_a_plain_submission_is_read_into_the_graders_copy(tmp_path):
    folder = submission(tmp_path)
    (folder / "nb.ipynb").write_bytes(SOURCE.read_bytes())
    row = Row("alice", "a")
    found = read_submission(folder, {"nb": CELLS}, row)
    (folder / "nb.ipynb").write_text("changed after reading")
    assert row.status == "graded" and found["nb"].cells[0].source == "".join(BASE["cells"][0]["source"])


def test_an_interrupted_autograde_says_what_it_kept_and_exits_130(monkeypatch, capsys, tmp_path):
    """Ctrl-C while grading: no traceback, the exit status a shell gives an interrupted command, and
    what was kept (nothing lost: each graded notebook is recorded as it finishes)."""
    from grader import cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "run", interrupted)
    assert cli.main(["--course-dir", str(tmp_path), "autograde"]) == 130
    err = capsys.readouterr().err
    assert "interrupted: autograde stopped" in err and "Traceback" not in err
    assert "Notebooks already graded are in the gradebook" in err
