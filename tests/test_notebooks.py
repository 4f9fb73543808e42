"""Structural checks over every lesson notebook in notebooks/, including ones added later.

nbval (``make test``) re-runs the notebooks and compares their outputs with the saved ones. These
tests check what nbval cannot: that the saved notebooks are complete, clean and self-contained.
A notebook saved without execution counts, for example, passes nbval while comparing nothing.
Refresh the saved outputs with ``make notebooks`` (tools/run_notebooks.py).
"""

import importlib
import importlib.util
import inspect
import json
import os
import pkgutil
import re
import sys
from pathlib import Path

# Warm matplotlib's font cache here, at collection time: the first import in a fresh environment
# logs "Matplotlib is building the font cache" to stderr, which must not land in a notebook output.
import matplotlib.font_manager  # noqa: E402, F401
import nbformat
import pytest

import course_lib

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = REPO / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
# The README's lesson table: one row per lesson, "| N | `notebooks/NN_name.ipynb` | ... |".
LESSON_ROW = re.compile(r"^\| *(\d+) *\| *`notebooks/((\d\d)_\w+)\.ipynb` *\|", flags=re.M)

MAX_NOTEBOOK_BYTES = 1_000_000
MAX_OUTPUT_BYTES = 200_000
TEXT_TYPES = ("text/plain", "text/html", "text/markdown", "text/latex", "application/json")
# Machine-specific paths: the checkout, home directories, temporary files, Windows user folders.
MACHINE_PATH = re.compile(r"/(work|home|root|tmp|Users)/|[A-Za-z]:\\\\?Users")
MEMORY_ADDRESS = re.compile(r"\bat 0x[0-9a-fA-F]{4,}")
# Cells whose output is a timing or a profile must not be compared by nbval.
# Code that prints a measured time. A profiler used only to count kernel calls prints no time, so
# what marks a profiler cell is a time column or its table, not the profiler itself.
TIMING_CODE = re.compile(r"%%?timeit|%%?time\b|timeit\.|perf_counter|benchmark\.Timer|"
                         r"\.table\(|_time(_total)?\b|time_total")
# A measured round-off-level value (a non-zero number under 1e-4 in scientific notation, such as
# "1.8e-07"): its digits differ from CPU to CPU, so a compared output must print a bound instead.
ROUND_OFF_VALUE = re.compile(r"(?<![\w.])[1-9]\.\d+e-(0[5-9]|[1-9]\d)\b")
SANITIZE_FILE = REPO / "tests" / "nbval_sanitize.cfg"
IMAGE_LINK = re.compile(r"!\[[^\]]*\]\(([^)\s]+)[^)]*\)|<img[^>]*\bsrc=[\"']([^\"']+)[\"']")


def load(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def output_texts(output) -> list:
    """The human-readable text of one output (never base64 image data)."""
    if output.output_type == "stream":
        return [output.text]
    if output.output_type == "error":
        return [output.get("evalue", "")] + list(output.get("traceback", []))
    data = output.get("data", {})
    return [v if isinstance(v, str) else json.dumps(v) for k, v in data.items() if k in TEXT_TYPES]


def public_names() -> set:
    """Classes and functions defined by course_lib's modules (what a notebook must not redefine)."""
    names = set()
    for info in pkgutil.walk_packages(course_lib.__path__, prefix="course_lib."):
        if info.name.rsplit(".", 1)[-1].startswith("_"):
            continue
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if (not name.startswith("_") and (inspect.isclass(obj) or inspect.isfunction(obj))
                    and getattr(obj, "__module__", "") == module.__name__):
                names.add(name)
    return names


def test_every_lesson_is_in_the_readme_table_and_every_row_is_a_lesson():
    rows = LESSON_ROW.findall((REPO / "README.md").read_text(encoding="utf-8"))
    listed = [name for _, name, _ in rows]
    present = [p.stem for p in NOTEBOOKS]
    assert len(listed) >= 7, f"the README's lesson table lists only {listed}"
    assert sorted(set(listed) - set(present)) == [], "README rows without a notebook"
    assert sorted(set(present) - set(listed)) == [], "notebooks missing from the README's lesson table"
    assert listed == sorted(listed), "the README's lesson table is not in reading order"
    assert all(int(number) == int(prefix) for number, _, prefix in rows), \
        f"a lesson's number differs from its file's: {rows}"


@pytest.fixture(params=NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def notebook(request):
    return request.param, load(request.param)


def test_valid_nbformat(notebook):
    path, nb = notebook
    nbformat.validate(nb)
    assert code_cells(nb), f"{path.name} has no code cells"


def test_executed_in_order(notebook):
    """Every code cell ran, once, top to bottom (nbval compares nothing for an unexecuted cell)."""
    path, nb = notebook
    counts = [c.execution_count for c in code_cells(nb)]
    unexecuted = [i for i, n in enumerate(counts) if n is None]
    assert not unexecuted, (f"{path.name}: code cells {unexecuted} have no execution count; "
                            f"re-run it with `make notebooks`")
    assert counts == list(range(1, len(counts) + 1)), (
        f"{path.name}: execution counts {counts} are not 1..{len(counts)}; it was not run top to "
        f"bottom in a fresh kernel (use `make notebooks`)")


def test_no_errors_or_stderr(notebook):
    path, nb = notebook
    for i, cell in enumerate(code_cells(nb)):
        for output in cell.outputs:
            assert output.output_type != "error", (
                f"{path.name} cell {i}: saved with an error: {output.ename}: {output.evalue}")
            is_stderr = output.output_type == "stream" and output.name == "stderr"
            assert not is_stderr, f"{path.name} cell {i} writes to stderr: {output.text[:300]!r}"


def test_no_machine_paths_or_addresses_in_outputs(notebook):
    path, nb = notebook
    home = os.path.expanduser("~")
    for i, cell in enumerate(code_cells(nb)):
        for output in cell.outputs:
            for text in output_texts(output):
                found = MACHINE_PATH.search(text) or MEMORY_ADDRESS.search(text)
                assert not found, f"{path.name} cell {i}: output contains {found.group(0)!r}"
                assert str(REPO) not in text and (home in ("", "/") or home not in text), (
                    f"{path.name} cell {i}: output contains a path of this machine")


def test_sizes(notebook):
    path, nb = notebook
    size = path.stat().st_size
    assert size < MAX_NOTEBOOK_BYTES, f"{path.name} is {size:,} bytes (limit {MAX_NOTEBOOK_BYTES:,})"
    for i, cell in enumerate(code_cells(nb)):
        for output in cell.outputs:
            n = len(json.dumps(output))
            assert n < MAX_OUTPUT_BYTES, (f"{path.name} cell {i}: one output is {n:,} bytes "
                                          f"(limit {MAX_OUTPUT_BYTES:,}); keep big bundles out")


def test_first_code_cell_sets_up(notebook):
    path, nb = notebook
    first = code_cells(nb)[0].source
    assert re.search(r"torch\.manual_seed\(\d+\)", first), f"{path.name}: first code cell must seed"
    assert "torch.set_printoptions(precision=4)" in first, (
        f"{path.name}: first code cell must call torch.set_printoptions(precision=4)")


def test_uses_course_lib_without_redefining_it(notebook):
    path, nb = notebook
    source = "\n".join(c.source for c in code_cells(nb))
    assert re.search(r"^\s*(import course_lib|from course_lib[\w.]* import)", source, re.M), (
        f"{path.name} does not import course_lib")
    names = public_names()
    redefined = sorted(set(re.findall(r"^\s*(?:class|def)\s+(\w+)", source, re.M)) & names)
    assert not redefined, (f"{path.name} redefines {redefined} from course_lib: import it (and "
                           f"show it with inspect.getsource) instead of pasting a copy")


def test_timing_cells_are_not_compared(notebook):
    path, nb = notebook
    for i, cell in enumerate(code_cells(nb)):
        if TIMING_CODE.search(cell.source):
            tags = cell.metadata.get("tags", [])
            assert "nbval-ignore-output" in tags or "nbval-skip" in tags, (
                f"{path.name} cell {i} measures time: tag it nbval-ignore-output")


def sanitized(text: str) -> str:
    """``text`` after the substitutions of tests/nbval_sanitize.cfg, in order, as nbval makes them."""
    lines = SANITIZE_FILE.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if line.startswith("regex:"):
            replace = lines[i + 1].split(":", 1)[1].strip() if i + 1 < len(lines) else ""
            text = re.sub(line.split(":", 1)[1].strip(), replace, text)
    return text


def test_compared_outputs_print_no_round_off_values(notebook):
    """A printed round-off value (1.8e-07) changes with the CPU, and nbval would compare it."""
    path, nb = notebook
    for i, cell in enumerate(code_cells(nb)):
        if "nbval-ignore-output" in cell.metadata.get("tags", []):
            continue
        for output in cell.outputs:
            for text in output_texts(output):
                found = ROUND_OFF_VALUE.search(sanitized(text))
                assert not found, (
                    f"{path.name} cell {i} prints the round-off value {found.group(0)}: print the "
                    f"bound it meets instead (assert gap < 1e-6; print 'within 1e-6'; README, Lessons)")


def test_image_links_are_relative_and_exist(notebook):
    path, nb = notebook
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        for groups in IMAGE_LINK.findall(cell.source):
            link = next(g for g in groups if g)
            if re.match(r"(https?|data|attachment):", link):
                continue
            assert not link.startswith("/") and not re.match(r"[A-Za-z]:", link), (
                f"{path.name}: image link {link!r} is absolute; use a path relative to the notebook")
            assert (path.parent / link).is_file(), f"{path.name}: image {link!r} does not exist"


def test_checks_catch_a_bad_notebook(tmp_path):
    """The helpers above see what they must: an unexecuted cell, a stderr output, a local path."""
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("print(1)")
    nb.cells = [cell]
    assert [c.execution_count for c in code_cells(nb)] == [None]
    cell.outputs = [nbformat.v4.new_output("stream", name="stderr", text="/home/student/x.py:1: Warning")]
    (text,) = output_texts(cell.outputs[0])
    assert MACHINE_PATH.search(text)
    cell.outputs = [nbformat.v4.new_output("display_data", data={"image/png": "AAAA", "text/plain": "<Figure>"})]
    assert output_texts(cell.outputs[0]) == ["<Figure>"]
    assert {"Linear", "Linear_Layer", "NeuralNet", "ManualLinear", "check_linear_backward"} <= public_names()
    assert [m.group(0) for m in map(ROUND_OFF_VALUE.search, ["differ by 1.8e-07", "gap 2.8e-16"])] == [
        "1.8e-07", "2.8e-16"]
    assert not any(map(ROUND_OFF_VALUE.search, ["within 1e-06", "diff 0.0e+00", "rms 1.84e+05", "3.2e-03"]))
    assert sanitized("largest error 2.2e-16") == "largest error ROUNDOFF"
    assert IMAGE_LINK.findall("![a](../assets/x.png) <img src='y.svg'>") == [("../assets/x.png", ""), ("", "y.svg")]


def load_runner():
    spec = importlib.util.spec_from_file_location("run_notebooks", REPO / "tools" / "run_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_run_notebooks_saves_a_clean_run_and_leaves_a_failing_notebook_alone(tmp_path, capsys,
                                                                             monkeypatch):
    runner = load_runner()
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the caller's setup must not reach the kernel
    monkeypatch.setenv("MKL_CBWR", "AVX2")
    good, bad = tmp_path / "good.ipynb", tmp_path / "bad.ipynb"
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(
        "import os, pathlib, sys\n"
        "print(os.environ['COURSE_FAST'], pathlib.Path.cwd().name)\n"
        "print(os.environ['ATEN_CPU_CAPABILITY'], os.environ['OMP_NUM_THREADS'], 'MKL_CBWR' in os.environ)\n"
        "sys.stdout.flush()\n"
        "print(sys.executable)")]
    nbformat.write(nb, good)
    nb.cells = [nbformat.v4.new_code_cell("raise ValueError('broken')")]
    nbformat.write(nb, bad)
    before = bad.read_bytes()

    assert runner.main([str(good), str(bad)]) == 1
    assert "FAILED   bad.ipynb" in capsys.readouterr().err
    assert bad.read_bytes() == before  # a failed run loses nothing

    (cell,) = load(good).cells
    assert cell.execution_count == 1
    assert [o.output_type for o in cell.outputs] == ["stream"]  # the two prints, merged
    fast, folder, capability, threads, cbwr, executable = cell.outputs[0].text.split()
    assert (fast, folder) == ("1", tmp_path.name)  # fast mode, run in the notebook's folder
    assert (capability, threads, cbwr) == ("default", "1", "False")  # the portable setup
    assert Path(executable).resolve() == Path(sys.executable).resolve()  # this environment's kernel
    assert "execution" not in cell.metadata  # no timestamps to churn git
