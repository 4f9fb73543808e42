"""Every lesson's first code cell: the install guard and the device (tools/first_cell.py)."""

import contextlib
import io
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import first_cell  # noqa: E402  (tools/ is not a package)

LESSONS = sorted((ROOT / "notebooks").glob("*.ipynb"))
DEVICE_PRINT = re.compile(r"^print\(f[\"']device: .*$", re.MULTILINE)


def first_code(nb) -> str:
    return next(cell.source for cell in nb.cells if cell.cell_type == "code")


def guard_part(source: str) -> str:
    """The cell up to and including its device print (the rest is the lesson's own imports)."""
    match = DEVICE_PRINT.search(source)
    assert match, "the first code cell prints no 'device: ...' line"
    return source[:match.end()]


def run_without_course_lib(source: str, monkeypatch):
    """Execute ``source`` as if course_lib were not installed; return the exception it raised."""
    monkeypatch.setitem(sys.modules, "course_lib", None)  # import course_lib -> ModuleNotFoundError
    with pytest.raises(ModuleNotFoundError) as raised:
        exec(compile(source, "<first cell>", "exec"), {})
    return raised.value


@pytest.mark.parametrize("path", LESSONS, ids=[p.stem for p in LESSONS])
def test_lesson_first_cell_names_the_install_command_when_course_lib_is_missing(path, monkeypatch):
    source = first_code(nbformat.read(path, as_version=4))
    assert source.lstrip().startswith("try:\n    import course_lib"), (
        f"{path.name}: the first code cell must start with the guard; run "
        f"`python tools/first_cell.py notebooks/{path.name}`, then re-run the lesson")
    error = run_without_course_lib(guard_part(source), monkeypatch)
    assert "pip install -e ." in str(error) and "restart the kernel" in str(error)
    assert error.__suppress_context__, "the guard's error should replace the bare one (from None)"


@pytest.mark.parametrize("path", LESSONS, ids=[p.stem for p in LESSONS])
def test_lesson_first_cell_picks_the_device_once_and_prints_it(path):
    source = guard_part(first_code(nbformat.read(path, as_version=4)))
    assert 'resolve_device("auto")' in source
    assert "from course_lib.device import resolve_device" in source  # not the training stack
    assert "course_lib.train" not in source
    printed, scope = io.StringIO(), {}
    with contextlib.redirect_stdout(printed):
        exec(compile(source, "<first cell>", "exec"), scope)
    assert re.fullmatch(r"device: (cuda|mps|cpu)\n", printed.getvalue())
    assert printed.getvalue() == f"device: {scope['DEVICE'].type}\n"


# --- tools/first_cell.py ---------------------------------------------------------------------

LESSON_05_STYLE = '''import os

import torch
from course_lib.train import evaluate, resolve_device

torch.manual_seed(0)
device = resolve_device("auto")  # chosen once, here
print(f"device: {device}  (CUDA when a GPU is available, otherwise the CPU)")'''


def notebook(*cells):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# Lesson 5 · Title")] + list(cells)
    return nb


def test_guard_goes_on_top_and_replaces_what_it_now_does():
    cell = nbformat.v4.new_code_cell(LESSON_05_STYLE, outputs=[nbformat.v4.new_output(
        "stream", name="stdout", text="device: cpu  (CUDA ...)\n")], execution_count=1)
    nb = notebook(cell)
    assert first_cell.add_guard(nb) is True
    source = first_code(nb)
    assert source.startswith(first_cell.GUARD + "\n\nimport os\n")
    assert source.count("import torch\n") == 1 and source.count("device: ") == 1
    assert 'device = DEVICE  # chosen once, here' in source
    assert "from course_lib.train import evaluate, resolve_device" in source  # other names kept
    assert cell.outputs == [] and cell.execution_count is None  # stale outputs are not kept
    assert first_cell.has_guard(nb)


def test_guard_is_added_once_however_often_the_tool_runs(tmp_path):
    path = tmp_path / "04_x.ipynb"
    nbformat.write(notebook(nbformat.v4.new_code_cell(LESSON_05_STYLE)), path)
    assert first_cell.main([str(path)]) == 0
    once = path.read_text()
    assert first_cell.main([str(path)]) == 0
    assert path.read_text() == once
    assert first_cell.main(["--check", str(path)]) == 0


def test_an_older_guard_is_replaced_and_the_lessons_own_code_kept():
    old = ('try:\n    import course_lib\nexcept ModuleNotFoundError:\n'
           '    raise SystemExit("install it")\n'
           'import torch\nDEVICE = torch.device("cpu")\nprint(f"device: {DEVICE}")\nimport math\n')
    nb = notebook(nbformat.v4.new_code_cell(old))
    assert first_cell.add_guard(nb)
    assert first_code(nb) == first_cell.GUARD + "\n\nimport math\n"


def test_a_notebook_without_code_gets_the_guard_after_its_title():
    nb = notebook()
    assert first_cell.add_guard(nb)
    assert nb.cells[0].cell_type == "markdown" and nb.cells[1].source == first_cell.GUARD


def test_the_guard_itself_works_without_and_with_course_lib(monkeypatch):
    error = run_without_course_lib(first_cell.GUARD, monkeypatch)
    assert "`pip install -e .`" in str(error)
    monkeypatch.undo()
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(first_cell.GUARD, "<guard>", "exec"), {})
    assert re.fullmatch(r"device: (cuda|mps|cpu)\n", printed.getvalue())


def test_check_lists_lessons_without_the_guard_and_fails(tmp_path):
    path = tmp_path / "04_x.ipynb"
    nbformat.write(notebook(nbformat.v4.new_code_cell("import torch")), path)
    before = path.read_text()
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "first_cell.py"), "--check",
                             str(path)], capture_output=True, text=True)
    assert result.returncode == 1 and f"without the guard: {path}" in result.stdout
    assert path.read_text() == before  # --check changes nothing


def test_a_path_that_is_not_a_notebook_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        first_cell.main([str(tmp_path / "missing.ipynb")])
    assert exit_.value.code == 2
    assert f"not a notebook file: {tmp_path / 'missing.ipynb'}" in capsys.readouterr().err
