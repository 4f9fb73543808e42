"""What leaves the grader: the score table as text (no control character reaches a terminal or
the CSV), the Canvas import, Gradescope's ``results.json`` checked against its published format,
and the similarity report."""

import csv
import io

import jsonschema
import pytest

from grader.exports import GRADESCOPE_SCHEMA, canvas_csv, check_gradescope, gradescope_results
from grader.similarity import similar_pairs
from grader.table import Row, print_table, write_csv
from grader.text import one_line

FORGED = "\x1b[1A\x1b[2K\rmallory  01_linear_layer      5 / 5    1.0s  graded\x1b]0;title\x07\u202e"


def test_control_characters_are_escaped_not_passed_on():
    assert one_line("a\tb\nc\r\nd") == "a b c  d"
    assert one_line("\x1b[2K") == "\\x1b[2K" and one_line("\x9b31m") == "\\x9b31m"
    assert one_line("\u202eevil") == "\\u202eevil" and one_line("naïve π ✓") == "naïve π ✓"


def test_a_forged_row_cannot_redraw_the_table(tmp_path, capsys):
    rows = [Row("mallory\x1b[1A", "01_linear_layer", 0, 5, status=f"graded; cell 3 raised {FORGED}",
                details=FORGED, flags=FORGED, failed_tests=["test_x\x1b"])]
    print_table(rows, "header")
    printed = capsys.readouterr().out
    write_csv(rows, tmp_path / "scores.csv")
    written = (tmp_path / "scores.csv").read_text()
    for text in (printed, written, canvas_csv(rows)[0]):
        assert not any(ord(c) < 32 and c != "\n" or 0x7f <= ord(c) < 0xa0 or c == "\u202e" for c in text)
    assert "\\x1b[1A\\x1b[2K mallory" in printed
    lines = [ln for ln in printed.splitlines() if ln.strip()]
    # the header, the column names, one row, a note and a flag under their titles: no line added
    assert len(lines) == 7 and lines[2].startswith("mallory\\x1b[1A  01_linear_layer      0 / 5")
    [row] = list(csv.DictReader(io.StringIO(written)))
    assert row["student"] == "mallory\\x1b[1A" and row["score"] == "0"


def rows():
    graded = Row("alice", "01_a", 3, 5, tests=[
        {"name": "test_forward", "score": 2.0, "max_score": 2.0, "output": "passed", "hidden": False},
        {"name": "test_backward", "score": 0.0, "max_score": 3.0, "output": "AssertionError: FAIL grad\x1b", "hidden": True}])
    return [graded, Row("alice", "02_b", 0, 6, status="not submitted"),
            Row("bob", "01_a", 5, 5), Row("bob", "02_b", 6, 6, status="graded, test cells restored")]


def test_canvas_import_has_its_columns_and_a_row_per_student():
    text, unknown = canvas_csv(rows())
    table = list(csv.reader(io.StringIO(text)))
    assert table[0] == ["Student", "ID", "SIS User ID", "Section", "01_a", "02_b"]
    assert table[1] == ["Points Possible", "", "", "", "5", "6"]
    assert table[2:] == [["alice", "", "alice", "", "3", ""], ["bob", "", "bob", "", "5", "6"]]
    assert unknown == []


# A gradebook as Canvas exports it (Grades > Export): a byte-order mark, the identity columns, a
# "Points Possible" row, assignments named "name (id)", and computed columns we leave alone.
EXPORT = ("\ufeffStudent,ID,SIS User ID,SIS Login ID,Section,01_a (4711),Other quiz (99),Current Score\n"
          "    Points Possible,,,,,5.00,10.00,(read only)\n"
          "\"Liddell, Alice\",1001,alice,aliddell,Section A,,7.00,70\n"
          "\"Builder, Bob\",1002,S-2,bob,Section B,,,\n")


def test_canvas_import_takes_ids_from_the_courses_gradebook_export():
    text, unknown = canvas_csv(rows() + [Row("carol", "01_a", 1, 5, status="graded")], EXPORT)
    table = list(csv.reader(io.StringIO(text)))
    # an assignment Canvas knows gets its exact column name (the id): the import updates it
    assert table[0] == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", "01_a (4711)", "02_b"]
    assert table[1] == ["Points Possible", "", "", "", "", "5", "6"]
    assert table[2] == ["Liddell, Alice", "1001", "alice", "aliddell", "Section A", "3", ""]  # by SIS User ID
    assert table[3] == ["Builder, Bob", "1002", "S-2", "bob", "Section B", "5", "6"]  # by SIS Login ID
    assert table[4] == ["carol", "", "carol", "", "", "1", ""] and unknown == ["carol"]  # named, not guessed


@pytest.mark.parametrize("text", ["", "name,score\nalice,3\n", "just text"])
def test_a_file_that_is_not_a_canvas_export_is_refused(text):
    with pytest.raises(ValueError, match="not a Canvas gradebook export"):
        canvas_csv(rows(), text)


def test_gradescope_results_follow_the_published_format():
    results = gradescope_results(rows()[0])
    check_gradescope(results)
    assert results["score"] == 3.0 and [t["name"] for t in results["tests"]] == ["test_forward", "test_backward"]
    hidden = results["tests"][1]
    assert (hidden["score"], hidden["max_score"], hidden["status"], hidden["visibility"]) == (0.0, 3.0, "failed", "after_published")
    assert hidden["output"] == "AssertionError: FAIL grad\\x1b"
    assert {t["visibility"] for t in results["tests"]} <= {"hidden", "after_due_date", "after_published", "visible"}


@pytest.mark.parametrize("broken", [
    {"tests": [{"name": "t", "max_score": 1}]},  # no score
    {"score": "3"},  # a string
    {"score": 1, "tests": [{"score": 1, "max_score": 1, "visibility": "students"}]},
    {"score": 1, "grade": 1},  # a field Gradescope does not define
])
def test_the_schema_refuses_what_gradescope_would(broken):
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, GRADESCOPE_SCHEMA)


ANSWER = """def train_epoch(model, batches, optimizer):
    model.train()
    total, count = 0.0, 0
    for images, labels in batches:
        optimizer.zero_grad()
        loss = F.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
        total += loss.item() * len(labels)
        count += len(labels)
    return total / count
"""


def test_similar_answers_are_listed_and_different_ones_are_not():
    renamed = ANSWER.replace("total", "running").replace("count", "seen")
    other = ("def train_epoch(model, batches, optimizer):\n    losses = []\n    model.train()\n"
             "    for x, y in batches:\n        out = model(x)\n        l = F.nll_loss(F.log_softmax(out, 1), y)\n"
             "        optimizer.zero_grad(); l.backward(); optimizer.step()\n        losses.append(l.item())\n"
             "    return sum(losses) / len(losses)\n")
    pairs = similar_pairs({"ann": ANSWER, "ben": renamed, "cy": other, "dee": ""})
    assert [(a, b) for a, b, *_ in pairs] == [("ann", "ben")] and pairs[0][2] > 0.9
    # what every student got in the release is not evidence
    assert similar_pairs({"ann": ANSWER, "ben": ANSWER}, release=ANSWER) == []
