"""tools/check_portable.py: it runs nbval under each numeric setup and fails on what differs.

The slow test runs the real thing on two made-up one-cell notebooks: one prints a value that
depends on the setup (the thread count), the other a bound that holds under every setup.
"""

import importlib.util
import os
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parent.parent


def load_tool():
    spec = importlib.util.spec_from_file_location("check_portable", REPO / "tools" / "check_portable.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tool = load_tool()


def saved_notebook(path: Path, source: str, output: str) -> Path:
    """A one-cell notebook saved as if run: execution count 1 and ``output`` on stdout."""
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(source, execution_count=1)
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=output)]
    nb.cells = [cell]
    nbformat.write(nb, path)
    return path


def test_each_run_gets_its_setup_and_nothing_left_from_the_caller(monkeypatch):
    monkeypatch.setenv("MKL_CBWR", "AVX512")
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    env = tool.run_env(tool.BY_NAME["avx2-2"])
    assert (env["ATEN_CPU_CAPABILITY"], env["OMP_NUM_THREADS"], env["COURSE_FAST"]) == ("avx2", "2", "1")
    assert "MKL_CBWR" not in env and "MPLBACKEND" not in env
    assert tool.run_env(tool.BY_NAME["mkl-compatible"])["MKL_CBWR"] == "COMPATIBLE"


def test_a_setup_the_machine_lacks_is_refused_not_run():
    avx2_with_mkl, arm_without_mkl = ("avx2", True), ("sve256", False)
    assert tool.why_not(tool.BY_NAME["avx2-2"], avx2_with_mkl) == ""
    assert "avx512" in tool.why_not(tool.BY_NAME["avx512-2"], avx2_with_mkl)
    assert "avx2" in tool.why_not(tool.BY_NAME["avx2-2"], arm_without_mkl)
    assert tool.why_not(tool.BY_NAME["default-2"], arm_without_mkl) == ""
    assert "MKL" in tool.why_not(tool.BY_NAME["mkl-compatible"], ("avx512", False))
    defaults = [s.name for s in tool.SETUPS if s.default]
    assert len(defaults) >= 3 and "default-1" in defaults


def test_the_junit_report_gives_each_differing_cell_and_its_message(tmp_path):
    report = tmp_path / "report.xml"
    report.write_text(
        '<testsuites><testsuite name="pytest">'
        '<testcase classname="x" name="Cell 0"/>'
        '<testcase classname="x" name="Cell 1"><failure message="Cell outputs differ">'
        "#x1B[91m- 0.1234\n+ 0.1235#x1B[0m</failure></testcase>"
        '<testcase classname="x" name="Cell 2"><error message="kernel died"/></testcase>'
        '<testcase classname="x" name="test_other"><failure message="not a cell"/></testcase>'
        "</testsuite></testsuites>")
    cells, differed = tool.parse_junit(report)
    assert cells == 3
    assert sorted(differed) == [1, 2]
    assert "- 0.1234\n+ 0.1235" in differed[1] and "#x1B" not in differed[1]


def test_bad_arguments_exit_2_naming_what_was_wrong(tmp_path, capsys):
    assert tool.main(["-c", "avx3-9"]) == 2
    assert "unknown setup avx3-9" in capsys.readouterr().err
    assert tool.main([str(tmp_path / "missing.ipynb")]) == 2
    assert "missing.ipynb" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        tool.main(["--jobs", "0"])
    assert exit_.value.code == 2


def test_the_default_notebooks_are_the_lessons_and_the_assignments_on_request():
    lessons = tool.find_notebooks([], assignments=False)
    both = tool.find_notebooks([], assignments=True)
    assert lessons and all(p.parent == REPO / "notebooks" for p in lessons)
    assert set(lessons) < set(both)
    assert all("assignments" in p.parts for p in set(both) - set(lessons))


@pytest.mark.slow
def test_a_value_that_depends_on_the_setup_fails_and_a_bound_passes(tmp_path, capsys):
    threads = saved_notebook(tmp_path / "threads.ipynb",
                             "import os\nprint(os.environ['OMP_NUM_THREADS'])", "1\n")
    bound = saved_notebook(tmp_path / "bound.ipynb",
                           "import os\nprint(int(os.environ['OMP_NUM_THREADS']) >= 1)", "True\n")
    jobs = str(min(2, len(os.sched_getaffinity(0))))
    status = tool.main(["-c", "default-1", "-c", "default-2", "-j", jobs, str(threads), str(bound)])
    out = capsys.readouterr().out
    assert status == 1, out
    assert "threads.ipynb cell 0: differs under default-2  (round-off" in out
    assert "bound.ipynb cell" not in out
    assert "2 notebooks, 2 cells" in out
    assert "3 of 4 runs matched" in out
    per_setup = dict(line.split(None, 1) for line in out.split("per setup:\n")[1].split("\n\n")[0].splitlines())
    assert per_setup["default-1"].endswith(" ok")  # the setup the saved output came from
    assert "DIFFERS: threads.ipynb cells [0]" in per_setup["default-2"]


SETUP_FAILURE = """cls = <class '_pytest.runner.CallInfo'>
      when = 'setup'
E   RuntimeError: Kernel died before replying to kernel_info"""


def test_a_run_whose_kernel_did_not_start_is_run_again_not_reported_as_round_off(monkeypatch):
    tool = load_tool()
    setup, notebook = tool.SETUPS[0], Path("notebooks/x.ipynb")
    calls = []

    def once(run, timeout):
        calls.append(run)
        if len(calls) == 1:
            run.differed = {0: SETUP_FAILURE, 1: SETUP_FAILURE}
        else:
            run.cells = 2
        return run

    monkeypatch.setattr(tool, "check_once", once)
    run = tool.check(tool.Run(setup, notebook), timeout=10)
    assert len(calls) == 2 and run.differed == {} and run.error == "" and run.cells == 2


def test_a_kernel_that_never_starts_is_an_error_with_its_cause(monkeypatch):
    tool = load_tool()

    def once(run, timeout):
        run.differed = {0: SETUP_FAILURE}
        return run

    monkeypatch.setattr(tool, "check_once", once)
    run = tool.check(tool.Run(tool.SETUPS[0], Path("notebooks/x.ipynb")), timeout=10)
    assert run.differed == {} and "Kernel died before replying to kernel_info" in run.error


def test_an_output_that_differs_is_not_taken_for_a_kernel_that_did_not_start():
    tool = load_tool()
    run = tool.Run(tool.SETUPS[0], Path("notebooks/x.ipynb"), differed={
        0: SETUP_FAILURE, 3: "Notebook cell execution failed\nE   AssertionError: 0.5 != 0.6"})
    assert tool.kernel_did_not_start(run) == ""
