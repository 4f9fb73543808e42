"""The graded assignments end to end, in a temporary course directory: nbgrader validates the
sources, generates the student release, and autogrades a class of made-up students.

The students: ``perfect`` (the solutions typed into the release), ``untouched`` (the release as
handed out), ``wrong_gradient`` (assignment 1 with a wrong bias gradient), and four bad inputs for
assignment 1: ``bad_json``, ``renamed``, ``missing`` (an empty folder) and ``deleted_tests``.
Scores are read from the score table the tool writes and from nbgrader's gradebook.
"""

import csv
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
TOOL_PATH = REPO / "tools" / "assignments.py"
ASSIGNMENTS = ["01_linear_layer", "02_manual_backward", "03_autograd_function", "04_train_mnist",
               "05_manual_mlp"]
BAD = ["bad_json", "renamed", "missing", "deleted_tests"]

spec = importlib.util.spec_from_file_location("assignments_tool", TOOL_PATH)
tool = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tool)


def env() -> dict:
    """nbgrader runs ``alembic`` from PATH: put this environment's bin/ first."""
    return dict(os.environ, PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))


def run_tool(course: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TOOL_PATH), "--course-dir", str(course), *args],
                          capture_output=True, text=True, env=env(), timeout=900)


def new_course(root: Path, names=None) -> Path:
    """A copy of the repository's course directory (sources and config only) under ``root``."""
    course = root / "course"
    for name in names or [p.name for p in (REPO / "assignments" / "source").iterdir() if p.is_dir()]:
        shutil.copytree(REPO / "assignments" / "source" / name, course / "source" / name)
    shutil.copy(REPO / "assignments" / "nbgrader_config.py", course)
    return course


def notebook(course: Path, folder: str, name: str):
    return nbformat.read(course / folder / name / f"{name}.ipynb", as_version=4)


def nbgrader_meta(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def cells_by_id(nb) -> dict:
    return {nbgrader_meta(c)["grade_id"]: c for c in nb.cells if nbgrader_meta(c).get("grade_id")}


def points_of(nb) -> dict:
    return {gid: m["points"] for gid, m in ((k, nbgrader_meta(c)) for k, c in cells_by_id(nb).items())
            if m.get("grade") and not m.get("solution")}


def between(text: str, begin: str, end: str) -> list:
    """The non-empty lines between ``### BEGIN <begin>`` and ``### END <end>`` markers."""
    lines, inside = [], False
    for line in text.splitlines():
        if f"BEGIN {begin}" in line:
            inside = True
        elif f"END {end}" in line:
            inside = False
        elif inside and line.strip():
            lines.append(line.strip())
    return lines


def answered(release_nb, source_nb, edit=None):
    """The release notebook with every solution cell answered as in the source (what a perfect
    student hands in); ``edit(grade_id, source) -> source`` changes an answer."""
    nb = nbformat.from_dict(release_nb)
    solutions = cells_by_id(source_nb)
    for gid, cell in cells_by_id(nb).items():
        if nbgrader_meta(cell).get("solution"):
            cell.source = solutions[gid].source if edit is None else edit(gid, solutions[gid].source)
    return nb


def wrong_bias_gradient(gid, source):
    if gid != "linear_layer":
        return source
    wrong = source.replace("grad_output.sum(0) if bias", "grad_output.mean(0) if bias")
    assert wrong != source, "the solution of assignment 1 no longer computes grad_bias as expected"
    return wrong


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    return new_course(tmp_path_factory.mktemp("assignments"))


@pytest.fixture(scope="module")
def kernels(tmp_path_factory):
    """For the in-process nbgrader calls: the kernel and helpers of this environment."""
    saved = dict(os.environ)
    tool.use_this_environment(tmp_path_factory.mktemp("kernels"))
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="module")
def validation(course, kernels):
    return tool.validate(course)


@pytest.fixture(scope="module")
def released(course, validation):
    result = run_tool(course, "release", "--no-validate")  # validated above, in-process
    assert result.returncode == 0, result.stderr
    return result


@pytest.fixture(scope="module")
def graded(course, released):
    """Hand in every student's work, run ``autograde``; return (CSV rows by key, stdout)."""
    sub = course / "submitted"
    for name in ASSIGNMENTS:
        release_nb, source_nb = notebook(course, "release", name), notebook(course, "source", name)
        for student, nb in (("perfect", answered(release_nb, source_nb)), ("untouched", release_nb)):
            (sub / student / name).mkdir(parents=True)
            nbformat.write(nb, str(sub / student / name / f"{name}.ipynb"))
    first = ASSIGNMENTS[0]
    release_nb, source_nb = notebook(course, "release", first), notebook(course, "source", first)
    for student in ["wrong_gradient"] + BAD:
        (sub / student / first).mkdir(parents=True)
    target = sub / "{}" / first / f"{first}.ipynb"
    nbformat.write(answered(release_nb, source_nb, wrong_bias_gradient), str(target).format("wrong_gradient"))
    text = nbformat.writes(answered(release_nb, source_nb))
    Path(str(target).format("bad_json")).write_text(text[: len(text) // 2])  # cut off mid-file
    Path(str(target).format("renamed")).with_name(f"{first} (copy).ipynb").write_text(text)
    deleted = answered(release_nb, source_nb)
    deleted.cells = [c for c in deleted.cells if nbgrader_meta(c).get("grade_id") != "test_backward"]
    nbformat.write(deleted, str(target).format("deleted_tests"))
    (sub / "missing" / "1_linear_layer").mkdir()  # a misspelt assignment folder

    result = run_tool(course, "autograde")
    assert result.returncode == 0, result.stdout + result.stderr
    with open(course / "scores.csv", newline="") as f:
        rows = {(r["student"], r["assignment"]): r for r in csv.DictReader(f)}
    return rows, result.stdout


def test_sources_validate(course, validation):
    assert sorted(p.name for p in (course / "source").iterdir()) == ASSIGNMENTS
    assert sorted(validation) == [f"source/{n}/{n}.ipynb" for n in ASSIGNMENTS]
    for path, result in validation.items():
        assert len(result["tests"]) >= 2, path
        assert result["failed"] == {}, f"{path}: {result['failed']}"


def test_release_has_no_solutions_or_hidden_tests(course, released):
    for name in ASSIGNMENTS:
        assert f"released  release/{name}/{name}.ipynb" in released.stdout
        source, release = notebook(course, "source", name), notebook(course, "release", name)
        text = (course / "release" / name / f"{name}.ipynb").read_text()
        for marker in ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS"):
            assert marker in (course / "source" / name / f"{name}.ipynb").read_text()
            assert marker not in text, f"{name}: {marker}"
        src_cells, rel_cells = cells_by_id(source), cells_by_id(release)
        assert list(rel_cells) == list(src_cells), f"{name}: the release lost or reordered cells"
        n_solutions = n_hidden = 0
        for gid, cell in src_cells.items():
            solution = between(cell.source, "SOLUTION", "SOLUTION")
            hidden = between(cell.source, "HIDDEN TESTS", "HIDDEN TESTS")
            released_lines = {line.strip() for line in rel_cells[gid].source.splitlines()}
            if nbgrader_meta(cell).get("solution"):
                n_solutions += 1
                assert "raise NotImplementedError()" in rel_cells[gid].source, f"{name}/{gid}"
                assert rel_cells[gid].source.count("raise NotImplementedError()") == \
                    cell.source.count("### BEGIN SOLUTION")
            assert solution == [] or nbgrader_meta(cell).get("solution"), f"{name}/{gid}"
            n_hidden += bool(hidden)
            leaked = [line for line in solution + hidden if line in released_lines and not line.startswith("#")]
            assert leaked == [], f"{name}/{gid} leaks {leaked}"
        assert n_solutions >= 1 and n_hidden >= 1, name


def test_perfect_submission_gets_full_points(course, graded):
    rows, _ = graded
    from nbgrader.api import Gradebook
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        for name in ASSIGNMENTS:
            row = rows["perfect", name]
            total = sum(points_of(notebook(course, "source", name)).values())
            assert (row["status"], row["failed_tests"]) == ("graded", "")
            assert float(row["score"]) == float(row["max_score"]) == total > 0
            assert gb.find_submission(name, "perfect").score == total


def test_untouched_release_gets_zero(course, graded):
    rows, _ = graded
    for name in ASSIGNMENTS:
        row = rows["untouched", name]
        tests = points_of(notebook(course, "source", name))
        assert (row["status"], float(row["score"]), float(row["max_score"])) == ("graded", 0.0, sum(tests.values()))
        assert sorted(row["failed_tests"].split(";")) == sorted(tests)
        assert "NotImplementedError" in row["details"]


def test_wrong_gradient_gets_partial_points_and_names_the_test(course, graded):
    rows, stdout = graded
    name = ASSIGNMENTS[0]
    points = points_of(notebook(course, "source", name))
    row = rows["wrong_gradient", name]
    assert row["failed_tests"] == "test_backward"
    assert float(row["score"]) == sum(points.values()) - points["test_backward"] > 0
    assert re.search(r"test_backward \(0/\d+\): FAIL grad_bias \(batch of 4\).*largest error", row["details"])
    # the student's graded notebook carries the readable report too
    graded_nb = notebook(course, "autograded/wrong_gradient", name)
    error = next(o for o in cells_by_id(graded_nb)["test_backward"].outputs if o.output_type == "error")
    assert "FAIL  grad_bias (batch of 4)" in error.evalue and "PASS  grad_weight (batch of 4)" in error.evalue
    assert re.search(r"wrong_gradient\s+01_linear_layer\s+\d+ / \d+\s+graded\s+test_backward", stdout)


def test_bad_submissions_get_a_clear_line_and_grading_goes_on(course, graded):
    rows, stdout = graded
    name = ASSIGNMENTS[0]
    total = sum(points_of(notebook(course, "source", name)).values())
    bad_json = rows["bad_json", name]
    assert bad_json["status"] == "invalid notebook" and float(bad_json["score"]) == 0
    assert f"{name}.ipynb is not a valid notebook file" in bad_json["details"]
    renamed = rows["renamed", name]
    assert renamed["status"] == "missing notebook"
    assert f"found {name} (copy).ipynb" in renamed["details"] and f"rename it to {name}.ipynb" in renamed["details"]
    assert rows["missing", name]["status"] == "missing notebook"
    assert rows["missing", name]["details"] == f"missing {name}.ipynb"
    deleted = rows["deleted_tests", name]
    assert deleted["status"] == "graded, test cells restored"
    assert float(deleted["score"]) == total  # the restored tests ran on the student's answers
    assert "deleted test cells test_backward" in deleted["details"]
    for student in ["wrong_gradient"] + BAD:  # one row per assignment, even those not handed in
        for other in ASSIGNMENTS[1:]:
            assert rows[student, other]["status"] == "not submitted"
    # bad_json is graded first (alphabetical order); everyone after it was still graded
    assert list(rows)[0] == ("bad_json", name)
    unknown = rows["missing", "1_linear_layer"]
    assert unknown["status"] == "unknown assignment" and ", ".join(ASSIGNMENTS) in unknown["details"]
    assert len(rows) == (2 + 1 + len(BAD)) * len(ASSIGNMENTS) + 1
    for student, status in (("bad_json", "invalid notebook"), ("perfect", "graded")):
        assert re.search(rf"^{student}\s+{name}\s+[\d.]+ / {total:g}\s+{status}", stdout, re.M)


def test_release_refuses_sources_that_fail_their_tests(tmp_path):
    course = new_course(tmp_path, [ASSIGNMENTS[0]])
    path = course / "source" / ASSIGNMENTS[0] / f"{ASSIGNMENTS[0]}.ipynb"
    text = path.read_text()
    broken = text.replace("grad_weight = input.t() @ grad_output", "grad_weight = 0.5 * input.t() @ grad_output")
    assert broken != text
    path.write_text(broken)
    result = run_tool(course, "release")
    assert result.returncode == 1
    assert f"FAILED  source/{ASSIGNMENTS[0]}/{ASSIGNMENTS[0]}.ipynb" in result.stdout
    assert "test_backward" in result.stdout and "FAIL  grad_weight" in result.stdout
    assert "fix the sources before releasing them" in result.stderr
    assert not (course / "release").exists()


def test_autograde_before_release_says_what_to_do(tmp_path):
    course = new_course(tmp_path, [ASSIGNMENTS[0]])
    (course / "submitted" / "someone" / ASSIGNMENTS[0]).mkdir(parents=True)
    result = run_tool(course, "autograde")
    assert result.returncode == 2
    assert "no assignment is in the gradebook" in result.stderr and "run `make assignments`" in result.stderr
    assert not (course / "scores.csv").exists()


def test_autograde_without_submissions_says_where_they_go(tmp_path):
    course = new_course(tmp_path, [ASSIGNMENTS[0]])
    result = run_tool(course, "autograde")
    assert result.returncode == 2
    assert "no submissions in" in result.stderr and "submitted/<student>/<assignment>/" in result.stderr


def test_unknown_assignment_name_is_refused(tmp_path):
    course = new_course(tmp_path, [ASSIGNMENTS[0]])
    result = run_tool(course, "release", "01_linear")
    assert result.returncode == 2
    assert "no assignment named 01_linear" in result.stderr and ASSIGNMENTS[0] in result.stderr
