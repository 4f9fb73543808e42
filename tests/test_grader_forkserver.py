"""The fork server (``grader/forkserver.py``): a student's process forked from a Python that has
imported torch, into a fresh bubblewrap sandbox, is walled in exactly as a Python that bubblewrap
started: no capability, the same namespaces, mounts, environment, folder and limits, no process of
the machine in sight; it holds no descriptor or module of the grader's; the process that waits for
it is out of its reach; and when the fork server cannot do its part, a fresh Python grades the
notebook instead and the grader says why.

Each probe is a notebook graded twice, forked and fresh (``--fresh-python``), and compared.
"""

import builtins
import os
import re
import shutil
import signal
import sys

import pytest
from test_sandbox import DOUBLE, REPO, TEST, grade

from grader import sandbox

pytestmark = [pytest.mark.slow, pytest.mark.long, pytest.mark.skipif(shutil.which("bwrap") is None,
                                                   reason="needs bubblewrap (apt-get install -y bubblewrap)")]

@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A copy of the course_lib the sandbox mounts."""
    root = tmp_path_factory.mktemp("repo")
    shutil.copytree(REPO / "course_lib", root / "course_lib", ignore=shutil.ignore_patterns("__pycache__"))
    return root


PROBE = """import os, sys, subprocess

def probe():
    status = dict(line.split(':', 1) for line in open('/proc/self/status'))
    fds = {}
    for fd in sorted(os.listdir('/proc/self/fd'), key=int):
        try:
            fds[fd] = os.readlink(f'/proc/self/fd/{fd}')
        except OSError:  # the folder listdir had open
            pass
    return {
        **{key: status[key].strip() for key in ('CapInh', 'CapPrm', 'CapEff', 'CapBnd', 'CapAmb', 'NoNewPrivs',
                                               'Seccomp', 'Uid', 'Gid', 'Groups')},
        'pid': os.getpid(), 'pids': sorted(p for p in os.listdir('/proc') if p.isdigit()),
        'fds': fds, 'cwd': os.getcwd(), 'env': dict(os.environ), 'argv': sys.argv[:2], 'path': sys.path,
        'main': sys.modules['__main__'].__file__, 'session_leader': os.getsid(0) == os.getpid(),
        'mounts': [' '.join(line.split()[4:6]) for line in open('/proc/self/mountinfo')],
        'limits': open('/proc/self/limits').read().splitlines(),
        'grader_modules': sorted(m for m in sys.modules if m.startswith(('grader', 'forkserver'))),
        'new_user_namespace': subprocess.run(['unshare', '--user', 'true'], capture_output=True).returncode,
        'hostname': os.uname().nodename,
    }
"""


def hand_back(name: str) -> str:
    """A test cell that calls the student's ``name()`` and leaves what it returned for ``taken(name)``."""
    return f"import builtins\nbuiltins._{name} = {name}()\n"


def taken(name: str):
    """What the test cell ``hand_back(name)`` left (the test cells run in this process)."""
    return builtins.__dict__.pop(f"_{name}")


def probe(repo, forked: bool) -> dict:
    outcome = grade(repo, {"probe": PROBE}, {"test_probe": hand_back("probe")},
                    forked=forked)
    assert outcome.scores == {"test_probe": 1.0}, outcome.failures
    return taken("probe")


def test_a_forked_student_process_is_walled_in_as_a_fresh_one(repo, monkeypatch):
    monkeypatch.setattr(sandbox, "fork_server_problem", "")
    fresh, forked = probe(repo, False), probe(repo, True)
    assert sandbox.fork_server_problem == ""  # it was forked
    for key in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert forked[key] == fresh[key] == "0000000000000000", key
    assert forked["NoNewPrivs"] == fresh["NoNewPrivs"] == "1"
    for key in ("Seccomp", "Uid", "Gid", "Groups", "cwd", "env", "argv", "path", "main",
                "mounts", "grader_modules", "new_user_namespace", "hostname"):
        assert forked[key] == fresh[key], key
    assert forked["cwd"] == sandbox.HOME and forked["main"] == "/grader/harness.py"
    assert forked["grader_modules"] == [] and forked["new_user_namespace"] != 0
    assert forked["session_leader"]  # a session of its own (under bubblewrap: its process 1's)
    # no process of the machine in sight: only the sandbox's process 1 and the student's own
    assert forked["pids"] == ["1", str(forked["pid"])] and len(fresh["pids"]) == 2
    # its descriptors: /dev/null in, what the calls print out (the harness points 1 and 2 at it),
    # its two pipes, and one output file per cell (the setup and the probe) and the calls' (the
    # grader opened them): nothing else
    fds = forked["fds"]
    assert list(fds) == [str(n) for n in range(len(fds))] and len(fds) == len(fresh["fds"])
    assert fds["0"] == "/dev/null" and fds["1"] == fds["2"] == fds[str(len(fds) - 1)], fds
    assert fds["1"].endswith("calls.txt")
    assert fds["3"].startswith("pipe:") and fds["4"].startswith("pipe:")
    names = [fds[str(n)].rsplit("/", 1)[1] for n in range(5, len(fds))]
    assert len(names) == 3 and all(re.fullmatch(r"cell-?\d+\.txt", n) for n in names[:2]) and names[2] == "calls.txt", fds
    # the same limits, but one process more: the fork server's child, which waits for it, is
    # counted in the sandbox's user namespace
    pairs = list(zip(fresh["limits"], forked["limits"]))
    assert len(pairs) == len(fresh["limits"]) == len(forked["limits"])
    assert all(a == b for a, b in pairs if not a.startswith("Max processes")), pairs
    count = [int(line.split()[2]) for line in forked["limits"] + fresh["limits"] if line.startswith("Max processes")]
    assert count[0] == count[1] + 1, count


def test_a_forked_process_ends_as_a_fresh_one_is_reported(repo):
    """Exit codes and signals come back through the fork server's child as bubblewrap gave them."""
    for forked in (True, False):
        exits = grade(repo, {"double": DOUBLE, "quit": "import os\nos._exit(3)\n"}, forked=forked)
        assert exits.problems == ["cell 3 ended the Python process (exit code 3)"], (forked, exits.problems)
        assert exits.scores == {"test_double": 1.0}
        killed = grade(repo, {"double": DOUBLE, "term": "import os, signal\nos.kill(os.getpid(), signal.SIGTERM)\n"},
                       forked=forked)
        assert killed.problems == [f"cell 3 ended the Python process (exit code {128 + signal.SIGTERM})"], killed.problems


def test_the_fork_server_holds_nothing_of_the_graders():
    """A fresh program (not a fork of the grader), with the sandbox's environment, no folder of the
    grader's as its current one, and no descriptor but its socket."""
    server = sandbox.ForkServer()
    server.start()
    try:
        pid = server.process.pid
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = dict(item.split(b"=", 1) for item in f.read().split(b"\0") if item)
        assert {k.decode(): v.decode() for k, v in env.items()} == sandbox.sandbox_env()
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")[:-1]
        assert [a.decode() for a in argv[:4]] == [sys.executable, "-s", "-B", str(sandbox.FORKSERVER)]
        assert os.readlink(f"/proc/{pid}/cwd") == "/"
        fds = {fd: os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
        assert sorted(fds.values()) == ["/dev/null"] * 3 + [fds[argv[4].decode()]], fds
        assert fds[argv[4].decode()].startswith("socket:")
    finally:
        server.close()


def test_a_sandbox_the_child_cannot_prove_it_joined_is_not_used(repo, monkeypatch):
    """The child checks that its root folder after ``setns`` is the sandbox's; when it is not (here:
    the grader names another), it stops before any student code runs, and a fresh Python grades."""
    monkeypatch.setattr(sandbox, "fork_server_problem", "")
    monkeypatch.setattr(sandbox.Sandbox, "_root_id", lambda self: [0, 0])
    outcome = grade(repo, {"double": DOUBLE})
    assert outcome.scores == {"test_double": 1.0} and outcome.problems == []
    assert "the root folder after joining is not the sandbox's" in sandbox.fork_server_problem


def test_a_fork_server_that_does_not_start_leaves_a_fresh_python_to_grade(repo, monkeypatch, tmp_path):
    broken = tmp_path / "forkserver.py"
    broken.write_text("import sys\nsys.exit(1)\n")
    monkeypatch.setattr(sandbox, "FORKSERVER", broken)
    monkeypatch.setattr(sandbox, "_fork_server", None)
    monkeypatch.setattr(sandbox, "fork_server_problem", "")
    outcome = grade(repo, {"double": DOUBLE})
    assert outcome.scores == {"test_double": 1.0} and outcome.problems == []
    assert "the fork server could not start (the fork server has ended)" == sandbox.fork_server_problem


def test_nothing_of_one_notebook_reaches_the_next(repo):
    """Both come from the same fork server; the first leaves a file, a process and a patched torch
    behind, and the second finds none of them."""
    litter = ("import os, subprocess, torch\n"
              "FOUND = sorted(os.listdir('/tmp'))  # an environment under /tmp has its mount point there\n"
              "def found():\n    return FOUND\n"
              "open('/tmp/left.txt', 'w').write('x')\n"
              "subprocess.Popen(['sleep', '1000'], start_new_session=True)\n"
              "torch.left_behind = True\n"
              "torch.add = lambda *args, **kwargs: 'patched'\n")
    first = grade(repo, {"double": DOUBLE, "litter": litter},
                  {"test_double": TEST, "test_found": hand_back("found")})
    assert first.problems == [] and first.scores == {"test_double": 1.0, "test_found": 1.0}, first.failures
    found = taken("found")
    assert "left.txt" not in found
    look = ("import os, torch\n\ndef look():\n"
            "    return (sorted(os.listdir('/tmp')), sorted(p for p in os.listdir('/proc') if p.isdigit()),\n"
            "            hasattr(torch, 'left_behind'), torch.add(torch.ones(1), 1).tolist(), os.getpid())\n")
    second = grade(repo, {"look": look}, {"test_look": hand_back("look")})
    assert second.scores == {"test_look": 1.0}, second.failures
    files, pids, patched, added, pid = taken("look")
    assert (files, pids, patched, added) == (found, ["1", str(pid)], False, [2.0])


def test_a_notebook_whose_descriptors_do_not_fit_one_message_gets_a_fresh_python(repo, monkeypatch):
    """The fork server receives a notebook's descriptors in one message (at most 253); a notebook
    with more cells than that is graded by a fresh Python, and the next one is forked again."""
    parent = "import os\n\ndef parent():\n    return os.getppid()\n"
    test = {"test_parent": hand_back("parent")}
    monkeypatch.setattr(sandbox, "fork_server_problem", "")
    monkeypatch.setattr(sandbox, "MAX_PASSED_FDS", 7)  # the setup and one answer cell fit, two do not
    for answers, started_by in (({"parent": parent}, 0), ({"parent": parent, "double": DOUBLE}, 1),
                                ({"parent": parent}, 0)):
        outcome = grade(repo, answers, test)
        assert outcome.scores == {"test_parent": 1.0}, outcome.failures
        # forked, the process that waits for it is outside its PID namespace: its parent reads 0
        assert taken("parent") == started_by
    assert sandbox.fork_server_problem == ""
