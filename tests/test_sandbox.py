"""The sandbox's limits and walls, one small notebook at a time (``grader.grading`` grading a
made-up assignment, no nbgrader): each test hands in an answer that tries to break out or to
exhaust the machine, and reads the score and status the grader gives it.

The answers run against a copy of ``course_lib`` in a temporary folder, so an answer that got out
could only damage the copy, and the test would see it.
"""

import shutil
import sys
from pathlib import Path

import nbformat
import pytest

from grader import grading, sandbox
from grader.sandbox import Limits

REPO = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.slow, pytest.mark.long, pytest.mark.skipif(shutil.which("bwrap") is None,
                                                   reason="needs bubblewrap (apt-get install -y bubblewrap)")]

SETUP = "import torch\n"
DOUBLE = "def double(x):\n    return 2 * x\n"
TEST = "assert torch.equal(double(torch.arange(3.0)), torch.tensor([0.0, 2.0, 4.0]))\n"


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A copy of the course_lib the sandbox mounts (read-only, if the walls hold)."""
    root = tmp_path_factory.mktemp("repo")
    shutil.copytree(REPO / "course_lib", root / "course_lib", ignore=shutil.ignore_patterns("__pycache__"))
    return root


SHORT = Limits(cell_s=20, call_s=20, notebook_s=60)


def grade(repo: Path, answers: dict, tests: dict = None, limits: Limits = SHORT,
          setup: str = SETUP, withheld=(), kernel: dict = None, autograd: bool = True,
          forked: bool = True) -> grading.Outcome:
    """Grade a notebook of ``setup``, the answer cells ``{grade_id: source}`` and the test cells
    ``{grade_id: source}`` (one point each; default: ``double`` doubles), saved with ``kernel``."""
    tests = {"test_double": TEST} if tests is None else tests
    cells = {"setup": {"kind": "setup", "source": setup, "points": 0.0}}
    cells.update({gid: {"kind": "answer", "source": "", "points": 0.0} for gid in answers})
    cells.update({gid: {"kind": "test", "source": src, "points": 1.0} for gid, src in tests.items()})
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell(answers.get(gid, cell["source"]), metadata={"nbgrader": {"grade_id": gid}})
        for gid, cell in cells.items()])
    if kernel:
        nb.metadata["kernelspec"] = kernel
    nb = nbformat.reads(nbformat.writes(nb), as_version=4)  # as the grader reads a file
    return grading.grade_notebook(grading.Job("student", "a", "submission", nb, cells, list(withheld),
                                              limits, True, repo, autograd, forked))


def test_an_honest_answer_scores_and_the_home_folder_starts_empty(repo):
    outcome = grade(repo, {"double": DOUBLE, "home": "import os\n\ndef home():\n    return sorted(os.listdir('.'))\n"},
                    {"test_double": TEST, "test_home": "assert home() == ['.tmp'], home()\n"})
    assert outcome.scores == {"test_double": 1.0, "test_home": 1.0}, outcome.failures
    assert outcome.problems == []


def test_the_student_has_no_capability_and_cannot_remount_course_lib(repo):
    """Run as root, bwrap keeps every capability unless told: ``mount -o remount,rw`` then made
    the read-only course_lib (the grader's own checks) writable."""
    answer = ("import os, subprocess\n"
              "subprocess.run(['mount', '-o', 'remount,rw,bind', '/course/course_lib'], capture_output=True)\n"
              "try:\n    open('/course/course_lib/pwned.py', 'w').write('x = 1')\nexcept OSError as e:\n"
              "    print('refused:', e)\n\n"
              "def capabilities():\n"
              "    return int(next(l for l in open('/proc/self/status') if l.startswith('CapEff')).split()[1], 16)\n")
    outcome = grade(repo, {"double": DOUBLE, "escape": answer},
                    {"test_double": TEST, "test_caps": "assert capabilities() == 0, hex(capabilities())\n"})
    assert not (repo / "course_lib" / "pwned.py").exists()
    assert outcome.scores == {"test_double": 1.0, "test_caps": 1.0}, outcome.failures


def test_too_many_files_stop_that_cell_only(repo):
    flood = "import os\nfor i in range(10**6):\n    open(f'f{i}', 'w').close()\n"
    outcome = grade(repo, {"double": DOUBLE, "flood": flood}, limits=Limits(cell_s=20, call_s=20, notebook_s=60, files=500))
    assert outcome.problems == ["cell 3 created more than 500 files (the limit per student)"]
    assert outcome.scores == {"test_double": 1.0}, outcome.failures


def test_a_full_disk_stops_that_cell_and_tmp_counts_too(repo):
    fill = ("import os\nfor i in range(100):\n"
            "    with open(f'/tmp/big{i}' if i % 2 else f'big{i}', 'wb') as f:\n        f.write(b'x' * 500_000)\n")
    outcome = grade(repo, {"double": DOUBLE, "fill": fill}, limits=Limits(cell_s=20, call_s=20, notebook_s=60, disk_bytes=4 * 2**20))
    assert outcome.problems == ["cell 3 filled its 4 MB of disk (the limit per student) and was stopped there"]
    assert outcome.scores == {"test_double": 1.0}, outcome.failures


def test_nothing_outside_home_is_writable(repo):
    probe = ("import os\n\ndef writable():\n    found = []\n"
             "    for d in ['/', '/dev', '/dev/shm', '/usr', '/course/course_lib', '/grader']:\n"
             "        try:\n            open(os.path.join(d, 'probe'), 'w').close()\n            found.append(d)\n"
             "        except OSError:\n            pass\n    return found\n")
    outcome = grade(repo, {"probe": probe}, {"test_writable": "assert writable() == [], writable()\n"})
    assert outcome.scores == {"test_writable": 1.0}, outcome.failures


def test_killing_every_process_it_can_see_costs_only_that_cell(repo):
    kill = ("import os, signal\ntry:\n    os.kill(-1, signal.SIGKILL)  # every process it may signal, itself apart\n"
            "except ProcessLookupError:\n    print('no other process in sight', flush=True)\nos.killpg(0, signal.SIGKILL)\n")
    outcome = grade(repo, {"double": DOUBLE, "kill": kill})
    assert outcome.problems == ["cell 3 ended the Python process (exit code 137)"]
    assert outcome.feedback.cells[2].outputs[0].text == "no other process in sight\n"
    assert outcome.scores == {"test_double": 1.0}, outcome.failures


def test_a_fork_bomb_is_capped_and_costs_only_its_cell(repo):
    bomb = ("import os, time\nchildren = 0\ntry:\n    while True:\n        if os.fork() == 0:\n"
            "            time.sleep(60)\n            os._exit(0)\n        children += 1\nfinally:\n"
            "    print('children:', children)\n")
    outcome = grade(repo, {"double": DOUBLE, "bomb": bomb}, limits=Limits(cell_s=20, call_s=20, notebook_s=60, processes=8))
    # RLIMIT_NPROC stops it at once, or (the grader running as root, whom the kernel exempts) the
    # grader's count of the sandbox's processes, 4 times a second
    assert outcome.problems in (["cell 3 started more than 8 processes or threads (the limit per student) "
                                 "and was stopped there"], ["cell 3 started more than 8 processes (the limit per student)"])
    assert outcome.scores == {"test_double": 1.0}, outcome.failures


def test_a_python_environment_under_tmp_is_mounted_too(monkeypatch):
    # A checkout (and its .venv) under /tmp: the environment's mount point must not clash with
    # the sandbox's own /tmp (bwrap failed with "Can't make symlink at /tmp: File exists").
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory(dir="/tmp") as folder:
        env, work = Path(folder) / "env", Path(folder) / "work"
        env.mkdir(), work.mkdir()
        (env / "marker").write_text("mounted\n")
        (work / "program.pt").touch()
        monkeypatch.setattr(sys, "prefix", str(env))
        argv = ["/bin/sh", "-c", f"find {sandbox.HOME} -xdev | wc -l; cat {env}/marker; "
                f"echo x > /tmp/new && ls {sandbox.HOME}/.tmp"]
        done = subprocess.run(sandbox.bwrap_command(work, REPO, argv, Limits()),
                              capture_output=True, text=True)
        made = sandbox.home_entries()  # what the student's file count leaves out
    assert done.returncode == 0, done.stderr
    count, *rest = done.stdout.split()
    assert rest == ["mounted", "new", Path(folder).name]  # /tmp is in the home folder
    assert int(count) == made > 2  # the home folder, .tmp and the environment's mount points


AUTOGRAD_PATHS = """import torch


def tries():
    x = torch.ones(2, requires_grad=True)
    attempts = {
        "Tensor.backward": lambda: (x * x).sum().backward(),
        "autograd.grad": lambda: torch.autograd.grad((x * x).sum(), x),
        "func.grad": lambda: torch.func.grad(lambda t: (t * t).sum())(torch.ones(2)),
        "functorch": lambda: __import__("torch._functorch.apis").\\
            _functorch.apis.grad(lambda t: (t * t).sum())(torch.ones(2)),
        "engine": lambda: torch.autograd.variable.Variable._execution_engine.run_backward(
            ((x * x).sum(),), (torch.ones(()),), False, False, (), True, True),
    }
    found = {}
    for name, attempt in attempts.items():
        try:
            attempt()
            found[name] = "ran"
        except RuntimeError as e:
            found[name] = "refused" if "autograd is off while a is graded" in str(e) else str(e)
    return found
"""


@pytest.mark.parametrize("autograd", [False, True])
def test_autograd_is_off_in_the_sandbox_when_the_assignment_says_so(repo, autograd):
    expected = "refused" if not autograd else "ran"
    outcome = grade(repo, {"tries": AUTOGRAD_PATHS}, {"test_tries": f"assert set(tries().values()) == {{{expected!r}}}, tries()\n"},
                    autograd=autograd)
    assert outcome.scores == {"test_tries": 1.0}, outcome.failures


LOADS_THE_FILE = """import importlib.util, os

spec = importlib.util.spec_from_file_location("copy", "/course/course_lib/functions.py")
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
Linear_Layer = module.Linear_Layer
cached = os.path.exists("/course/course_lib/__pycache__")
"""


def test_a_withheld_solutions_code_is_not_in_the_sandbox(repo):
    (repo / "course_lib" / "__pycache__").mkdir(exist_ok=True)  # a cache the student could unmarshal
    outcome = grade(repo, {"linear": LOADS_THE_FILE}, {"test_linear": LINEAR_TEST},
                    withheld=["course_lib.functions.Linear_Layer"])
    assert outcome.scores == {"test_linear": 0.0}
    assert "course_lib.functions.Linear_Layer is course_lib's solution, withheld while a is graded" \
        in outcome.failures["test_linear"]
    assert any("loads code from a file or bytes" in flag for flag in outcome.flags)


LINEAR_TEST = ("x, w = torch.randn(2, 3, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)\n"
               "assert torch.allclose(Linear_Layer.apply(x, w), x @ w)\n")
SPIN = ("import time\n\ndef spin(seconds):\n    start = time.process_time()\n"
        "    while time.process_time() - start < seconds:\n        pass\n    return 1\n")


def test_each_call_from_a_test_has_its_own_cpu_budget(repo):
    outcome = grade(repo, {"spin": SPIN}, {"test_twice": "assert spin(1.5) + spin(1.5) == 2\n",
                                           "test_long": "assert spin(30) == 1\n"},
                    limits=Limits(cell_s=20, call_s=2, notebook_s=120))
    assert outcome.scores == {"test_twice": 1.0, "test_long": 0.0}, outcome.failures
    assert outcome.problems == ["test_long: spin(...) ran past 2 s of CPU time (the limit per call)"]


def test_the_notebook_limit_counts_cpu_time_not_sleep(repo):
    """Ten seconds of sleep cost nothing of the notebook's 12 s (a wall-clock limit would have
    stopped the notebook there); the CPU time of the cells and of every call adds up, and the call
    that crosses 12 s is stopped with the notebook's limit named."""
    outcome = grade(repo, {"sleeps": "import time\ntime.sleep(10)\n", "spin": SPIN + "\nspin(2)\n",
                           "double": DOUBLE},
                    {"test_double": TEST, "test_spin": "assert spin(11) == 1\n", "test_after": TEST},
                    limits=Limits(cell_s=20, call_s=20, notebook_s=12))
    assert outcome.scores == {"test_double": 1.0, "test_spin": 0.0, "test_after": 0.0}, outcome.failures
    assert outcome.problems[0] == ("test_spin: spin(...) ran past the notebook's 12 s of CPU time "
                                   "(the limit per notebook)"), outcome.problems
    assert "used up its 12 s of CPU time" in outcome.failures["test_after"]


def test_nothing_is_graded_when_the_sandbox_cannot_be_watched(repo, monkeypatch):
    monkeypatch.setattr(sandbox.Sandbox, "_sandbox_root", staticmethod(lambda info_r: None))
    outcome = grade(repo, {"double": DOUBLE})
    assert outcome.scores == {} and outcome.feedback is None
    assert outcome.refused == ("the sandbox's process information was unavailable (bubblewrap did not say "
                               "which process it started); nothing of this notebook was graded")
