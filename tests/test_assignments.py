"""The graded assignments end to end, in a temporary course directory: nbgrader validates the
sources, generates the student release, and the sandboxed autograder grades a class of made-up
students; every score and status line is read from the score table the tool writes.

The class: ``perfect`` (the solutions typed into the release) and ``untouched`` (the release as
handed out) for every assignment in ``assignments/source/``; for assignment 1, a student for each
usual mistake (``MISTAKES``), each cheat (``CHEATS``, ``LINKS``, ``LOADERS``), a copy-pasted answer
cell, four bad files (``BAD``), the crafted files of issue 23 (``MALFORMED``), an honest ``len`` and
an escape-sequence injection; for assignments 2 and 5 the students whose code changes the tests'
inputs (``INPUTS``); for assignment 4 a student who wraps the library's training loop. A
second small course runs assignment 2 under short limits with the students that crash
(``CRASHES``): a dying process, a loop that ignores interrupts, 100 MB of output, 8 GB of memory, a
notebook that deletes files, ten busy forked children, and an honest ``victim`` graded beside them.
"""

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.long, pytest.mark.skipif(shutil.which("bwrap") is None,
                                                   reason="needs bubblewrap (apt-get install -y bubblewrap)")]

REPO = Path(__file__).resolve().parent.parent
TOOL_PATH = REPO / "tools" / "assignments.py"
ASSIGNMENTS = sorted(p.name for p in (REPO / "assignments" / "source").iterdir()
                     if p.is_dir() and any(p.glob("*.ipynb")))
A1, A2, A4 = "01_linear_layer", "02_manual_backward", "04_train_mnist"
BAD = ["bad_json", "renamed", "missing", "deleted_tests"]

from grader import course as tool  # noqa: E402
from grader import grading  # noqa: E402
from grader.exports import check_gradescope  # noqa: E402


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


def replaced(*pairs):
    """An edit of assignment 1's answer: each ``(old, new)`` replaced, each one required to match."""
    def edit(source):
        for old, new in pairs:
            assert old in source, f"the solution of {A1} no longer contains {old!r}"
            source = source.replace(old, new)
        return source
    return edit


ZERO_BACKWARD = ("return grad_input, grad_weight, grad_bias",
                 "return torch.zeros_like(input), torch.zeros_like(weight), None")
# Assignment 1 with one usual mistake each: (edit, first FAIL line of test_backward in the details)
MISTAKES = {
    "wrong_gradient": (replaced(("grad_output.sum(0) if bias", "grad_output.mean(0) if bias")),
                       r"FAIL grad_bias \(batch of 4\) shape \(3,\), largest error [\d.]+ at index"),
    "no_batch_sum": (replaced(("grad_output.sum(0) if bias", "grad_output if bias")),
                     r"FAIL grad_bias \(batch of 4\) shape \(4, 3\), expected \(3,\) \(not summed over the batch\?\)"),
    "swapped_needs": (replaced(("grad_input = grad_output @ weight",
                                "grad_input = grad_output @ weight if ctx.needs_input_grad[1] else None"),
                               ("grad_weight = grad_output.t() @ input",
                                "grad_weight = grad_output.t() @ input if ctx.needs_input_grad[0] else None")),
                      r"FAIL grad_weight \(input needs no gradient\) returned None, but "
                      r"ctx.needs_input_grad\[1\] is True: this gradient is needed \(needs_input_grad indices swapped\?\)"),
    "needs_index_2": (replaced(("grad_output.sum(0) if bias is not None", "grad_output.sum(0) if ctx.needs_input_grad[2]")),
                      r"FAIL backward \(no bias\) raised IndexError: tuple index out of range \(ctx.needs_input_grad "
                      r"has one flag per argument given to apply: apply\(x, w\) gives two\)"),
    "reads_global": (replaced(("grad_weight = grad_output.t() @ input", "grad_weight = grad_output.t() @ x")),
                     r"FAIL backward \(batch of 4\) raised NameError: name 'x' is not defined"),
    "no_save": (replaced(("ctx.save_for_backward(input, weight, bias)", "ctx.has_bias = bias is not None")),
                r"FAIL backward \(batch of 4\) raised RuntimeError: ctx.saved_tensors is empty: "
                r"did forward call ctx.save_for_backward\(...\)\?"),
}
WRAPPER = """import course_lib.functions


class Linear_Layer(torch.autograd.Function):
    @staticmethod
    def forward(ctx, *args):
        return course_lib.functions.Linear_Layer.forward(ctx, *args)

    @staticmethod
    def backward(ctx, grad_output):
        return course_lib.functions.Linear_Layer.backward(ctx, grad_output)
"""
READS_SOURCE = """import json
import sqlite3

for path in ["../../../source/{a}/{a}.ipynb", "{course}/source/{a}/{a}.ipynb"]:
    try:
        exec("".join(json.load(open(path))["cells"][2]["source"]))
    except OSError:
        pass
hidden = sqlite3.connect("{course}/gradebook.db").execute("select source from source_cell").fetchall()
"""
# Assignment 1 with one cheat each: (answer cell from the solution and the stub, score, flags,
# what the details say)
CHEATS = {
    "reads_source": (lambda sol, stub, course: READS_SOURCE.format(a=A1, course=course), 0,
                     ["exec/eval", "open(", "gradebook", "source/"], "NameError: name 'Linear_Layer' is not defined"),
    "patches_torch": (lambda sol, stub, course: replaced(ZERO_BACKWARD)(sol) +
                      "\ntorch.allclose = torch.autograd.gradcheck = lambda *a, **k: True\n", 2,
                      ["assigns to torch.*"], "FAIL grad_input (batch of 4) shape (4, 5), largest error"),
    "patches_report": (lambda sol, stub, course: replaced(ZERO_BACKWARD)(sol) +
                       "\nfrom course_lib.checks import Report\nReport.raise_if_failed = lambda self: self\n", 2,
                       ["assigns to course_lib.*"], "FAIL grad_input (batch of 4)"),
    "input_transformer": (lambda sol, stub, course: stub +
                          "\nget_ipython().input_transformers_post.append(lambda lines: ['pass\\n'])\n", 0,
                          ["get_ipython", "input_transformers"], "raised NotImplementedError"),
    "hides_errors": (lambda sol, stub, course: replaced((ZERO_BACKWARD[0], "pass"))(sol) +
                     "\nip = get_ipython()\nip.showtraceback = lambda *a, **k: None\n"
                     "ip.events.register('post_run_cell', lambda result: setattr(result, 'error_in_exec', None))\n",
                     2, ["get_ipython", "showtraceback", "events.register"],
                     "raised ValueError: backward returned 1 gradients for 3 inputs"),
    "wraps_solution": (lambda sol, stub, course: WRAPPER, 0, [],
                       "course_lib.functions.Linear_Layer is course_lib's solution, withheld while "
                       f"{A1} is graded: use your own implementation"),
}
# Assignment 2 under short limits: (edit of the sgd_step answer, score, the status's problem)
CRASHES = {
    "exits": ("\nimport os\nos._exit(1)\n", 3, "cell 10 ended the Python process (exit code 1)"),
    "loops": ("\nwhile True:\n    try:\n        pass\n    except KeyboardInterrupt:\n        pass\n", 3,
              "cell 10 ran past 10 s of CPU time (the limit per cell)"),
    # ten busy children (within the process limit): their CPU time is the student's, not a neighbour's
    "forks_busy": ("\nimport os\nfor _ in range(10):\n    if os.fork() == 0:\n        while True:\n"
                   "            pass\nos.wait()\n", 3, "cell 10 ran past 10 s of CPU time (the limit per cell)"),
    "victim": ("\n", 6, ""),
    "floods": ("\nprint('x' * 100_000_000)\n", 6,
               "cell 10 printed more than 1 MB (the limit per cell) and was stopped there"),
    "hogs_memory": ("\nimport torch\nhog = torch.ones(2**33, dtype=torch.uint8)\n", 6,
                    "cell 10 ran out of memory (4 GB, the limit per student) and was stopped there"),
    "deletes_files": ("\nimport os, shutil\nfor path in [{canary!r}, os.getcwd()]:\n    try:\n"
                      "        os.remove(path) if os.path.isfile(path) else shutil.rmtree(path)\n"
                      "    except OSError as e:\n        print('could not delete', path, type(e).__name__)\n", 6, ""),
}


# Assignment 1 handed in as a link: (where the link points, from the submission folder)
LINKS = {"link_source": f"../../../source/{A1}/{A1}.ipynb", "link_other": f"../../perfect/{A1}/{A1}.ipynb"}
LOADERS = {  # answers that load the library's code afresh: (answer cell, flags)
    "loads_spec": ("import importlib.util\nspec = importlib.util.spec_from_file_location('f', "
                   "'/course/course_lib/functions.py')\nmodule = importlib.util.module_from_spec(spec)\n"
                   "spec.loader.exec_module(module)\nLinear_Layer = module.Linear_Layer\n",
                   ["imports importlib/ctypes/subprocess", "loads code from a file or bytes"]),
    "loads_pickle": ("import pickle\nsource = open('/course/course_lib/functions.py').read()\n\n\n"
                     "class Payload:\n    def __reduce__(self):\n        return exec, (source, globals())\n\n\n"
                     "pickle.loads(pickle.dumps(Payload()))\n", ["open(", "loads code from a file or bytes"]),
}
# Issue 23's students whose code changes the tests' inputs (assignments 2 and 5): the grader judges its
# own copies. (assignment, grade_id, edit of the solution cell, score, failed tests, text in details)
A5 = "05_manual_mlp"
ZERO_PARAMS = ("def mlp_backward(params, cache, grad_logits):\n    for p in params.values():\n        p.zero_()\n"
               "    return {n: grad_logits.sum(0) if n == 'bias3' else torch.zeros_like(p) for n, p in params.items()}\n")
STEP_INSIDE = ("    return {name: grads[name] for name in sorted(grads)}",
               "    for name in params:\n        params[name] -= 0.1 * grads[name]  # a step inside backward\n"
               "    return {name: grads[name] for name in sorted(grads)}")
INPUTS = {
    "zeroes_grads_only": (A2, "sgd_step", lambda sol: "def sgd_step(params, grads, lr):\n    for n in params:\n"
                          "        grads[n].zero_()\n", 3, ["test_sgd_step", "test_training"],
                          "unchanged: this parameter was never stepped"),
    "zeroes_grads_after": (A2, "sgd_step", lambda sol: sol + "\n    for name in params:\n        grads[name].zero_()\n",
                           6, [], ""),
    "replaces_params": (A2, "sgd_step", lambda sol: "def sgd_step(params, grads, lr):\n    for n in list(params):\n"
                        "        params[n] = (params[n] - lr * grads[n]).detach()\n", 3, ["test_sgd_step", "test_training"],
                        "sgd_step replaced params['weight1'] with a new tensor: update each parameter in place"),
    "zeroes_params": (A5, "mlp_backward", lambda sol: ZERO_PARAMS, 2,
                      ["test_layer1", "test_layer2", "test_layer3", "test_training"], "FAIL weight3 shape (4, 3), largest error"),
    "steps_inside": (A5, "mlp_backward", lambda sol: sol.replace(*STEP_INSIDE), 7, [], ""),
}
MALFORMED = ["no_cells", "deep_json", "no_source"]  # each an invalid notebook; null_nbgrader is graded
INJECTION = "\x1b[1A\x1b[2K\rinjects_escapes  01_linear_layer      5 / 5    1.0s  graded"


def hand_in(course: Path, student: str, name: str, nb) -> None:
    (course / "submitted" / student / name).mkdir(parents=True)
    nbformat.write(nb, str(course / "submitted" / student / name / f"{name}.ipynb"))


def with_answer(course: Path, name: str, answers: dict):
    """The release of ``name`` answered as in the source, except ``answers`` ({grade_id: source})."""
    release_nb, source_nb = notebook(course, "release", name), notebook(course, "source", name)
    return answered(release_nb, source_nb, lambda gid, source: answers.get(gid, source))


def read_table(course: Path) -> dict:
    with open(course / "scores.csv", newline="") as f:
        return {(r["student"], r["assignment"]): r for r in csv.DictReader(f)}


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
    for name in ASSIGNMENTS:
        hand_in(course, "perfect", name, with_answer(course, name, {}))
        hand_in(course, "untouched", name, notebook(course, "release", name))
    solution = cells_by_id(notebook(course, "source", A1))["linear_layer"].source
    stub = cells_by_id(notebook(course, "release", A1))["linear_layer"].source
    for student, (edit, _) in MISTAKES.items():
        hand_in(course, student, A1, with_answer(course, A1, {"linear_layer": edit(solution)}))
    for student, (answer, *_) in CHEATS.items():
        hand_in(course, student, A1, with_answer(course, A1, {"linear_layer": answer(solution, stub, course)}))
    pasted = with_answer(course, A1, {})
    stub_cell = cells_by_id(notebook(course, "release", A1))["linear_layer"]
    pasted.cells.insert(2, nbformat.v4.new_code_cell(stub_cell.source, metadata=stub_cell.metadata))
    hand_in(course, "pasted_cell", A1, pasted)
    hand_in(course, "wraps_training", A4, with_answer(course, A4, {
        "accuracy": "def top_k_accuracy(model, batches, k):\n    return evaluate(model, batches)[1]\n",
        "train_epoch": "import course_lib.train\n\n\ndef train_epoch(model, batches, optimizer, accumulate):\n"
                       "    return course_lib.train.train_epoch(model, batches, optimizer)[0]\n"}))

    target = course / "submitted" / "{}" / A1 / f"{A1}.ipynb"
    for student in BAD:
        (course / "submitted" / student / A1).mkdir(parents=True)
    text = nbformat.writes(with_answer(course, A1, {}))
    Path(str(target).format("bad_json")).write_text(text[: len(text) // 2])  # cut off mid-file
    Path(str(target).format("renamed")).with_name(f"{A1} (copy).ipynb").write_text(text)
    deleted = with_answer(course, A1, {})
    deleted.cells = [c for c in deleted.cells if nbgrader_meta(c).get("grade_id") != "test_backward"]
    nbformat.write(deleted, str(target).format("deleted_tests"))
    (course / "submitted" / "missing" / "1_linear_layer").mkdir()  # a misspelt assignment folder
    hand_in_crafted(course, solution)
    for student, (name, gid, edit, *_) in INPUTS.items():
        answer = cells_by_id(notebook(course, "source", name))[gid].source
        assert STEP_INSIDE[0] in answer or student != "steps_inside", f"the solution of {A5} changed"
        hand_in(course, student, name, with_answer(course, name, {gid: edit(answer)}))

    result = run_tool(course, "autograde", "--jobs", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    return read_table(course), result.stdout


def hand_in_crafted(course: Path, solution: str) -> None:
    """The students of issue 23 for assignment 1: links, malformed files, loaders, ``len``, escapes."""
    for student, target in LINKS.items():
        (course / "submitted" / student / A1).mkdir(parents=True)
        (course / "submitted" / student / A1 / f"{A1}.ipynb").symlink_to(target)
    data = json.loads(nbformat.writes(with_answer(course, A1, {})))
    no_source = json.loads(json.dumps(data))
    del next(c for c in no_source["cells"] if nbgrader_meta(c).get("solution"))["source"]
    null = json.loads(json.dumps(data))
    null["cells"][0]["metadata"]["nbgrader"] = None
    texts = {"no_cells": json.dumps({k: v for k, v in data.items() if k != "cells"}),
             "deep_json": "[" * 100_000 + "]" * 100_000, "no_source": json.dumps(no_source),
             "null_nbgrader": json.dumps(null)}
    for student, text in texts.items():
        (course / "submitted" / student / A1).mkdir(parents=True)
        (course / "submitted" / student / A1 / f"{A1}.ipynb").write_text(text)
    for student, (answer, _) in LOADERS.items():
        hand_in(course, student, A1, with_answer(course, A1, {"linear_layer": answer}))
    hand_in(course, "shadows_len", A1, with_answer(course, A1, {
        "linear_layer": solution + "\n\n\ndef len(obj, _len=len):\n    return _len(obj)\n"}))
    hand_in(course, "injects_escapes", A1, with_answer(course, A1, {
        "linear_layer": solution + f"\n\nraise ValueError({INJECTION!r})\n"}))


@pytest.fixture(scope="module")
def crashed(tmp_path_factory):
    """Assignment 2 alone under short limits, handed in by the students who crash (``CRASHES``)."""
    course = new_course(tmp_path_factory.mktemp("limits"), [A2])
    assert run_tool(course, "release", "--no-validate").returncode == 0
    canary = course / "canary.txt"
    canary.write_text("the students' code must not reach this file")
    solution = cells_by_id(notebook(course, "source", A2))["sgd_step"].source
    for student, (addition, *_) in CRASHES.items():
        hand_in(course, student, A2, with_answer(course, A2, {"sgd_step": solution + addition.format(canary=str(canary))}))
    result = run_tool(course, "autograde", "--cell-timeout", "10", "--notebook-timeout", "120")
    assert result.returncode == 0, result.stdout + result.stderr
    return course, read_table(course), result.stdout


def test_sources_validate(course, validation):
    assert sorted(p.name for p in (course / "source").iterdir()) == ASSIGNMENTS and A1 in ASSIGNMENTS
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
    rows, stdout = graded
    from nbgrader.api import Gradebook
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        for name in ASSIGNMENTS:
            row = rows["perfect", name]
            total = sum(points_of(notebook(course, "source", name)).values())
            assert (row["status"], row["failed_tests"], row["flags"]) == ("graded", "", ""), row
            assert float(row["score"]) == float(row["max_score"]) == total > 0
            assert gb.find_submission(name, "perfect").score == total
            assert row["isolation"] == "sandbox"
    assert ("graded in: sandbox (bubblewrap); limits: 60 s per cell, 60 s per call from a test (CPU time), "
            "300 s per notebook (CPU time)") in stdout


def test_untouched_release_gets_zero(course, graded):
    rows, _ = graded
    for name in ASSIGNMENTS:
        row = rows["untouched", name]
        tests = points_of(notebook(course, "source", name))
        assert (row["status"], float(row["score"]), float(row["max_score"])) == ("graded", 0.0, sum(tests.values()))
        assert sorted(row["failed_tests"].split(";")) == sorted(tests)
        assert "NotImplementedError" in row["details"]


@pytest.mark.parametrize("student", MISTAKES)
def test_each_mistake_loses_the_backward_points_and_is_named(course, graded, student):
    rows, _ = graded
    points = points_of(notebook(course, "source", A1))
    row = rows[student, A1]
    assert (row["status"], row["failed_tests"], row["flags"]) == ("graded", "test_backward", "")
    assert float(row["score"]) == sum(points.values()) - points["test_backward"]
    assert re.search(r"test_backward \(0/3\): " + MISTAKES[student][1], row["details"]), row["details"]


def test_the_feedback_notebook_carries_the_report(course, graded):
    rows, stdout = graded
    graded_nb = notebook(course, "autograded/wrong_gradient", A1)
    error = next(o for o in cells_by_id(graded_nb)["test_backward"].outputs if o.output_type == "error")
    assert "FAIL  grad_bias (batch of 4)" in error.evalue and "PASS  grad_weight (batch of 4)" in error.evalue
    assert re.search(rf"wrong_gradient\s+{A1}\s+2 / 5\s+[\d.]+s\s+graded\s+\[test_backward\]", stdout)
    # the try-out cell did not run: its outputs are gone; the hidden tests' code is not shown
    assert all(not c.get("outputs") for c in graded_nb.cells if c.cell_type == "code" and not nbgrader_meta(c))
    for gid, cell in cells_by_id(notebook(course, "source", A1)).items():
        hidden = between(cell.source, "HIDDEN TESTS", "HIDDEN TESTS")
        shown = cells_by_id(graded_nb)[gid].source
        assert "HIDDEN TESTS" not in shown and not [ln for ln in hidden if ln in shown and not ln.startswith("#")], gid
        assert not hidden or "hidden tests (" in shown
    # nbgrader's own feedback command reads these notebooks and the scores in the gradebook
    result = subprocess.run([str(Path(sys.executable).parent / "nbgrader"), "generate_feedback", A1,
                             "--student", "wrong_gradient"], cwd=course, capture_output=True, text=True,
                            env=env(), timeout=600)
    assert result.returncode == 0, result.stderr
    html = (course / "feedback" / "wrong_gradient" / A1 / f"{A1}.html").read_text()
    assert "Score: 2.0 / 5.0" in html and "FAIL  grad_bias (batch of 4)" in html and "HIDDEN TESTS" not in html


@pytest.mark.parametrize("student", CHEATS)
def test_each_cheat_earns_nothing_and_is_flagged(course, graded, student):
    rows, _ = graded
    _, score, flags, detail = CHEATS[student]
    row = rows[student, A1]
    assert float(row["score"]) == score and row["status"] == "graded"
    assert detail in row["details"]
    assert all(flag in row["flags"] for flag in flags), row["flags"]
    assert (row["flags"] == "") == (flags == [])


def test_library_solutions_are_withheld_during_the_assignment_that_asks_for_them(course, graded):
    rows, _ = graded
    row = rows["wraps_training", A4]
    assert float(row["score"]) == 0 and sorted(row["failed_tests"].split(";")) == sorted(points_of(notebook(course, "source", A4)))
    assert row["details"].count("is course_lib's solution, withheld while 04_train_mnist is graded: "
                                "use your own implementation") >= 2


def test_a_pasted_copy_of_an_answer_cell_is_graded_in_its_last_copy(course, graded):
    rows, _ = graded
    row = rows["pasted_cell", A1]
    assert float(row["score"]) == 5
    assert row["status"] == "graded; cells 3, 4 share grade_id linear_layer: graded cell 4"
    graded_nb = nbformat.read(course / "autograded" / "pasted_cell" / A1 / f"{A1}.ipynb", as_version=4)
    assert "not graded: cell 4 has the same grade_id" in graded_nb.cells[2].outputs[0].text
    assert "nbgrader" not in graded_nb.cells[2].metadata


def test_bad_submissions_get_a_clear_line_and_grading_goes_on(course, graded):
    rows, stdout = graded
    total = sum(points_of(notebook(course, "source", A1)).values())
    bad_json = rows["bad_json", A1]
    assert bad_json["status"] == "invalid notebook" and float(bad_json["score"]) == 0
    assert f"{A1}.ipynb is not a valid notebook file" in bad_json["details"]
    renamed = rows["renamed", A1]
    assert renamed["status"] == "missing notebook"
    assert f"found {A1} (copy).ipynb" in renamed["details"] and f"rename it to {A1}.ipynb" in renamed["details"]
    assert rows["missing", A1]["status"] == "missing notebook"
    assert rows["missing", A1]["details"] == f"missing {A1}.ipynb"
    deleted = rows["deleted_tests", A1]
    assert deleted["status"] == "graded, test cells restored"
    assert float(deleted["score"]) == total  # the restored tests ran on the student's answers
    assert "deleted test cells test_backward" in deleted["details"]
    restored = notebook(course, "autograded/deleted_tests", A1).cells[-1]
    assert nbgrader_meta(restored)["grade_id"] == "test_backward" and restored.outputs == []
    for student in BAD:  # one row per assignment, even those not handed in
        for other in ASSIGNMENTS[1:]:
            assert rows[student, other]["status"] == "not submitted"
    assert list(rows)[0] == ("bad_json", A1)
    unknown = rows["missing", "1_linear_layer"]
    assert unknown["status"] == "unknown assignment" and ", ".join(ASSIGNMENTS) in unknown["details"]
    students = {student for student, _ in rows} - {"missing"}
    assert len(rows) == (len(students) + 1) * len(ASSIGNMENTS) + 1
    for student, status in (("bad_json", "invalid notebook"), ("perfect", "graded")):
        assert re.search(rf"^{student}\s+{A1}\s+[\d.]+ / {total:g}\s+[\d.]+s\s+{status}", stdout, re.M)


@pytest.mark.parametrize("student", CRASHES)
def test_each_crash_costs_only_its_own_cell(crashed, student):
    course, rows, stdout = crashed
    _, score, problem = CRASHES[student]
    row = rows[student, A2]
    assert float(row["score"]) == score, row
    assert row["status"] == ("graded; " + problem if problem else "graded")
    assert (course / "autograded" / student / A2 / f"{A2}.ipynb").is_file()  # a feedback notebook is kept
    assert ("limits: 10 s per cell, 60 s per call from a test (CPU time), 120 s per notebook (CPU time), 1 MB of output "
            "per cell, 4 GB of memory") in stdout


def test_the_students_code_cannot_reach_the_instructors_files(crashed):
    course, rows, _ = crashed
    assert (course / "canary.txt").is_file() and (course / "gradebook.db").is_file()
    assert (course / "source").is_dir() and (course / "submitted" / "exits").is_dir()
    floods = cells_by_id(notebook(course, "autograded/floods", A2))["sgd_step"].outputs
    assert "more bytes of output not shown" in floods[0].text and len(floods[0].text) < 20_000


def test_grading_refuses_without_bubblewrap_unless_told(crashed, tmp_path):
    course = tmp_path / "course"  # the released course of ``crashed``, with one honest student
    shutil.copytree(crashed[0], course, ignore=shutil.ignore_patterns("submitted", "autograded", "scores.csv"))
    hand_in(course, "perfect", A2, with_answer(course, A2, {}))
    no_bwrap = dict(env(), PATH=str(Path(sys.executable).parent))
    result = subprocess.run([sys.executable, str(TOOL_PATH), "--course-dir", str(course), "autograde"],
                            capture_output=True, text=True, env=no_bwrap, timeout=600)
    assert result.returncode == 2 and "bubblewrap (bwrap) is not installed" in result.stderr
    assert "pass --unsandboxed" in result.stderr and not (course / "scores.csv").exists()
    result = subprocess.run([sys.executable, str(TOOL_PATH), "--course-dir", str(course), "autograde",
                             "--unsandboxed"], capture_output=True, text=True, env=no_bwrap, timeout=600)
    assert result.returncode == 0, result.stderr
    row = read_table(course)["perfect", A2]
    assert (row["isolation"], float(row["score"])) == ("UNSANDBOXED", 6)
    assert "graded in: UNSANDBOXED (--unsandboxed)" in result.stdout


def test_release_refuses_sources_that_fail_their_tests(tmp_path):
    course = new_course(tmp_path, [ASSIGNMENTS[0]])
    path = course / "source" / ASSIGNMENTS[0] / f"{ASSIGNMENTS[0]}.ipynb"
    text = path.read_text()
    broken = text.replace("grad_weight = grad_output.t() @ input", "grad_weight = 0.5 * grad_output.t() @ input")
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


def test_suspicious_code_is_flagged_and_honest_code_is_not():
    honest = ("model.eval()\nwith torch.no_grad():\n    loss = F.cross_entropy(model(x), y)\n"
              "grad_bias = grad_output.sum(0) if ctx.needs_input_grad[2] else None\nif x == torch.ones(1): pass\n")
    assert grading.suspicious(3, honest) == []
    cases = {"torch.autograd.gradcheck = lambda *a, **k: True": "assigns to torch.*",
             "setattr(torch, 'allclose', ok)": "assigns to torch.*",
             "Report.raise_if_failed = lambda self: self": "assigns to course_lib.*",
             "exec(code)": "exec/eval", "open('../../../source/x.ipynb')": "open(",
             "get_ipython().events.register('post_run_cell', f)": "events.register",
             "import sqlite3; sqlite3.connect('gradebook.db')": "gradebook", "import os; os._exit(1)": "os._exit",
             "torch.autograd.Function.__subclasses__()": "digs for objects", "runpy.run_path(p)": "digs for objects",
             "gc.get_objects()": "digs for objects",
             "importlib.util.spec_from_file_location('f', p)": "loads code from a file or bytes",
             "from importlib.util import spec_from_file_location": "imports importlib/ctypes/subprocess",
             "pickle.loads(data)": "loads code from a file or bytes", "import marshal": "loads code from a file or bytes",
             "torch.autograd.variable.Variable._execution_engine": "reaches autograd's engine"}
    for code, flag in cases.items():
        assert flag in grading.suspicious(7, code)[0] and grading.suspicious(7, code)[0].startswith("cell 7: "), code


def test_errors_come_back_as_the_same_builtin_type():
    assert type(grading.rebuilt_error({"ename": "IndexError", "evalue": "tuple index out of range"})) is IndexError
    error = grading.rebuilt_error({"ename": "MyError", "evalue": "boom"})
    assert type(error) is RuntimeError and str(error) == "MyError: boom"
    assert type(grading.rebuilt_error({"ename": "SystemExit", "evalue": "1"})) is RuntimeError  # not raised as such


@pytest.mark.parametrize("student", LINKS)
def test_a_linked_notebook_is_refused_and_named(course, graded, student):
    rows, _ = graded
    row = rows[student, A1]
    assert (row["status"], float(row["score"])) == (f"not graded: {A1}/{A1}.ipynb is a symbolic link", 0)
    assert not (course / "autograded" / student).exists()  # no feedback: it would show the target


@pytest.mark.parametrize("student", MALFORMED)
def test_a_malformed_notebook_is_that_students_problem_only(graded, student):
    rows, _ = graded
    row = rows[student, A1]
    assert (row["status"], float(row["score"])) == ("invalid notebook", 0)
    assert row["details"].startswith(f"{A1}.ipynb is not a valid notebook file (")


def test_null_nbgrader_metadata_and_an_honest_len_are_graded_in_full(course, graded):
    rows, _ = graded
    total = sum(points_of(notebook(course, "source", A1)).values())
    for student in ("null_nbgrader", "shadows_len"):
        row = rows[student, A1]
        assert (row["status"], float(row["score"]), row["flags"]) == ("graded", total, ""), row
    assert "the answers define len, a builtin the tests use: the tests used the original" in rows["shadows_len", A1]["details"]


def test_escape_sequences_reach_neither_the_terminal_nor_the_csv(course, graded):
    rows, stdout = graded
    row = rows["injects_escapes", A1]
    assert (row["status"], float(row["score"])) == ("graded", sum(points_of(notebook(course, "source", A1)).values()))
    # the colour codes are dropped and the carriage return ends the line: the forged row is
    # plain text after the cell's own prefix
    assert f"cell 3 (linear_layer) raised ValueError: injects_escapes  {A1}      5 / 5    1.0s  graded" in row["details"]
    for text in (stdout, (course / "scores.csv").read_text(), (course / "canvas.csv").read_text()):
        assert "\x1b" not in text and "\r" not in text
    assert len(re.findall(rf"^injects_escapes\s+{A1}\s", stdout, re.M)) == 1


@pytest.mark.parametrize("student", LOADERS)
def test_loading_the_librarys_code_afresh_earns_nothing_and_is_flagged(graded, student):
    rows, _ = graded
    row = rows[student, A1]
    assert (row["status"], float(row["score"])) == ("graded", 0), row
    assert all(flag in row["flags"] for flag in LOADERS[student][1]), row["flags"]


def test_grades_go_out_to_canvas_gradescope_and_a_similarity_report(course, graded):
    rows, stdout = graded
    canvas = list(csv.reader(open(course / "canvas.csv", newline="")))
    assert canvas[0] == ["Student", "ID", "SIS User ID", "Section", *ASSIGNMENTS]
    perfect = next(r for r in canvas if r[0] == "perfect")
    assert perfect[1:4] == ["", "perfect", ""] and [float(v) for v in perfect[4:]] == \
        [float(rows["perfect", a]["max_score"]) for a in ASSIGNMENTS]
    assert next(r for r in canvas if r[0] == "link_source")[4] == ""  # nothing graded: nothing imported
    for name in ASSIGNMENTS:
        results = json.loads((course / "autograded" / "perfect" / name / "results.json").read_text())
        check_gradescope(results)
        assert results["score"] == float(rows["perfect", name]["max_score"])
        assert sorted(t["name"] for t in results["tests"]) == sorted(points_of(notebook(course, "source", name)))
    similar = list(csv.DictReader(open(course / "similarity.csv", newline="")))
    pairs = {(r["assignment"], r["student_a"], r["student_b"]) for r in similar}
    assert (A1, "deleted_tests", "perfect") in pairs and not any("untouched" in p for p in pairs)
    assert "similar answers (copydetect; read these side by side):" in stdout


def test_a_busy_neighbour_does_not_change_a_grade(crashed):
    _, rows, _ = crashed
    assert (rows["victim", A2]["status"], float(rows["victim", A2]["score"])) == ("graded", 6)


@pytest.mark.parametrize("student", INPUTS)
def test_tests_judge_the_graders_own_copies_of_their_inputs(graded, student):
    """A step that only zeroes the gradients, a backward that zeroes the parameters and crafts its
    answer: nothing; a step followed by zero_(), a step inside a correct backward: full marks."""
    rows, _ = graded
    name, _, _, score, failed, detail = INPUTS[student]
    row = rows[student, name]
    assert (row["status"], float(row["score"])) == ("graded", score), row
    assert sorted(t for t in row["failed_tests"].split(";") if t) == failed
    assert detail in row["details"], row["details"]
