"""tools/lesson_layout.py: every lesson's solution cells are tagged and collapsed."""

import importlib.util
import json
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("lesson_layout", ROOT / "tools" / "lesson_layout.py")
layout = importlib.util.module_from_spec(spec)
spec.loader.exec_module(layout)

LESSONS = layout.lessons()


@pytest.mark.parametrize("path", LESSONS, ids=[p.stem for p in LESSONS])
def test_every_solution_cell_of_the_lesson_is_collapsed(path):
    assert layout.problems(path) == [], "run: python tools/lesson_layout.py"


def test_the_lessons_have_solution_cells():
    with_solutions = [p for p in LESSONS if layout.solution_cells(nbformat.read(p, as_version=4))]
    assert len(with_solutions) >= 9


def notebook(*cells):
    nb = nbformat.v4.new_notebook()
    nb.cells = list(cells)
    return nb


def md(text):
    return nbformat.v4.new_markdown_cell(text)


def code(text, **metadata):
    return nbformat.v4.new_code_cell(text, metadata=metadata)


def test_solution_cells_are_found_under_check_your_answers_or_by_their_tag():
    nb = notebook(
        md("## Exercises"),
        code("def solution_early(x):\n    return x"),      # 1: not under the heading
        md("### Check your answers\n\nThe next cell holds the solutions."),
        code("import torch"),                                 # 3: defines no solution
        code("def solution_sum(x):\n    return x.sum()"),    # 4
        code("class SolutionSin(torch.autograd.Function):\n    pass"),  # 5
        md("## Summary"),
        code("def solution_late(x):\n    return x"),          # 7: the heading ended
        code("x = 1", tags=["solution"]),                     # 8: tagged by hand
    )
    assert layout.solution_cells(nb) == [4, 5, 8]


def test_collapsing_sets_both_marks_and_keeps_the_rest(tmp_path):
    cell = code("def solution_f(x):\n    return x", tags=["nbval-ignore-output"])
    nb = notebook(md("### Check your answers"), cell, code("print(1)"))
    path = tmp_path / "01_x.ipynb"
    nbformat.write(nb, path)
    before = json.loads(path.read_text())
    assert len(layout.problems(path)) == 1
    assert len(layout.apply(path)) == 1 and layout.problems(path) == []
    after = json.loads(path.read_text())
    solution = after["cells"][1]
    assert solution["metadata"]["jupyter"]["source_hidden"] is True
    assert solution["metadata"]["tags"] == ["nbval-ignore-output", "solution", "hide-input"]
    for old, new in zip(before["cells"], after["cells"]):  # only metadata moved
        assert {k: v for k, v in old.items() if k != "metadata"} == \
               {k: v for k, v in new.items() if k != "metadata"}
    assert after["cells"][2]["metadata"] == {}
    assert layout.apply(path) == []  # a second run changes nothing


def test_a_half_collapsed_cell_is_reported(tmp_path):
    hidden_only = code("def solution_f(x):\n    return x", jupyter={"source_hidden": True})
    path = tmp_path / "02_x.ipynb"
    nbformat.write(notebook(md("### Check your answers"), hidden_only), path)
    assert layout.main(["--check", str(path)]) == 1
    assert layout.main([str(path)]) == 0
    assert layout.main(["--check", str(path)]) == 0
