"""The grader's side of the sandbox: start the student's process, run its cells, call into it.

The student's answer cells run in ``grader/harness.py`` under bubblewrap (``bwrap``): its
home folder is an empty in-memory filesystem of a fixed size (``/tmp`` points into it), the only
writable place; the Python environment (the virtual environment and its base interpreter) and
``course_lib`` are mounted read-only; there is no network, no ``/proc`` of other processes, no
capability (so no remounting, even when the grader runs as root), and nothing else of this machine
(no ``assignments/``, no gradebook, no other student, not even the grader's own folder: what each
cell prints goes to a file the grader opened and handed over). Every limit is enforced from here: a
cell that runs too long, creates too many files or a process that dies is killed or noticed by this
side, whatever the student's code does.

Time is CPU time: a cell, and each call of the student's code from a test, may use ``cell_s`` /
``call_s`` seconds of CPU summed over every process in the sandbox (read from its ``/proc``), so
a loaded machine or a busy neighbour does not change a grade; a wall-clock backstop of
``WALL_FACTOR`` times that catches code that sleeps or waits. Each grading worker and its
sandboxes run on one core of their own (``autograde.pin_worker``). When the sandbox's process
information cannot be read, nothing is graded (``SandboxUnavailable``): no limit goes unenforced.

The ``course_lib`` the sandbox sees is a copy without the solutions the assignment asks for
(``withheld.py``): their code is not in the sandbox at all.
"""

import functools
import itertools
import json
import os
import resource
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from grader.harness import dumps, loads_plain
from grader.withheld import stubbed_copy

HARNESS = Path(__file__).resolve().with_name("harness.py")
FORKSERVER = Path(__file__).resolve().with_name("forkserver.py")
HOME = "/home/student"  # the student's folder inside the sandbox
PROGRAM = "/grader/program.pt"  # the cells to run, inside the sandbox
MAX_FRAME = 256 * 2**20  # bytes in one answer from the sandbox (a trained MLP's weights: ~0.5 MB)
MAX_PASSED_FDS = 250  # descriptors handed to the fork server in one message (the kernel's limit: 253)
WALL_FACTOR = 10  # wall-clock backstop: this many times a CPU-time limit (a loaded machine is slow)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Limits:
    """What one submission may use; every status that names a limit reads it from here."""

    cell_s: float = 60.0  # CPU seconds of one answer cell
    call_s: float = 60.0  # CPU seconds of one call of the student's code from a test
    notebook_s: float = 300.0  # CPU seconds of everything of one notebook together
    output_bytes: int = 1_000_000  # one cell's printed output (and any file it writes)
    memory_bytes: int = 4 * 2**30  # each of the student's processes' address space (torch on a CPU fits in 1)
    disk_bytes: int = 64 * 2**20  # the student's home folder (and /tmp), in memory: a trained MLP is 0.5 MB
    files: int = 1000  # files and folders in it
    processes: int = 16  # processes and threads in the sandbox (torch on one thread uses 3)

    def describe(self) -> str:
        return (f"{self.cell_s:g} s per cell, {self.call_s:g} s per call from a test (CPU time), "
                f"{self.notebook_s:g} s per notebook (CPU time), "
                f"{self.output_bytes / 1e6:g} MB of output per cell, {self.memory_bytes / 2**30:g} GB of memory, "
                f"{self.disk_bytes / 2**20:g} MB and {self.files:,} files of disk, "
                f"{self.processes} processes or threads")


@dataclass(frozen=True)
class Budget:
    """CPU seconds the sandbox may use from now on, a wall-clock deadline (``time.monotonic()``)
    behind it, and the limits they come from, for the status line."""

    cpu_s: float
    deadline: float
    limit: str  # "60 s of CPU time (the limit per cell)"
    wall_limit: str

    @classmethod
    def for_cell(cls, limits: Limits, notebook_cpu_used: float, notebook_deadline: float,
                 call: bool = False) -> "Budget":
        """The budget of the next cell or call: its own CPU limit, or what is left of the
        notebook's CPU time if that is less; a wall-clock backstop of ``WALL_FACTOR`` times it, or
        the notebook's own backstop if that comes first."""
        seconds, what = (limits.call_s, "call") if call else (limits.cell_s, "cell")
        limit = f"{seconds:g} s of CPU time (the limit per {what})"
        left = limits.notebook_s - notebook_cpu_used
        if left < seconds:
            seconds, limit = max(left, 0.0), f"the notebook's {limits.notebook_s:g} s of CPU time (the limit per notebook)"
        wall_end = time.monotonic() + WALL_FACTOR * seconds
        if wall_end <= notebook_deadline:
            return cls(seconds, wall_end, limit, f"{WALL_FACTOR * seconds:g} s of wall-clock time "
                       f"({WALL_FACTOR} x its CPU limit: it slept or waited)")
        notebook = (f"the notebook's {WALL_FACTOR * limits.notebook_s:g} s of wall-clock time "
                    f"({WALL_FACTOR} x the limit per notebook: it slept or waited)")
        return cls(seconds, notebook_deadline, limit, notebook)


class ForkServerFailed(Exception):
    """The fork server could not start the student's process (the grader then starts a fresh Python)."""


class SandboxUnavailable(Exception):
    """The sandbox cannot run, or cannot be watched (its process information is unreadable):
    the submission is not graded."""


class StudentProcessEnded(Exception):
    """The student's process was stopped (a limit) or ended by itself; the message says which."""


def bwrap_problem(repo: Path) -> str:
    """Why the sandbox cannot run here, or ``""`` when it can."""
    if shutil.which("bwrap") is None:
        return ("bubblewrap (bwrap) is not installed: on Debian or Ubuntu run `apt-get install -y "
                "bubblewrap`; elsewhere grade on such a machine")
    if "--size" not in bwrap_options():
        return "this bubblewrap is too old (it lacks --size, new in 0.5.0): install a newer one"
    import tempfile
    with tempfile.TemporaryDirectory(prefix="bwrap-probe-") as probe_dir:
        (Path(probe_dir) / "program.pt").touch()
        probe = subprocess.run(bwrap_command(Path(probe_dir), repo, ["/usr/bin/true"], Limits()),
                               capture_output=True, text=True)
    if probe.returncode != 0:
        return f"bubblewrap cannot start a sandbox here: {probe.stderr.strip() or probe.returncode}"
    return ""


@functools.lru_cache(maxsize=1)
def bwrap_options() -> str:
    return subprocess.run(["bwrap", "--help"], capture_output=True, text=True).stdout


def bwrap_command(workdir: Path, course_lib_parent: Path, argv: list, limits: Limits) -> list:
    """``bwrap`` with only the student's home folder writable (a tmpfs of ``limits.disk_bytes``),
    the Python environment read-only, and every capability dropped: run as root, bwrap would
    otherwise keep them, and the student's code could remount ``course_lib`` writable."""
    cmd = ["bwrap", "--unshare-all", "--unshare-user", "--cap-drop", "ALL", "--die-with-parent",
           "--new-session", "--clearenv", "--proc", "/proc", "--dev", "/dev", "--ro-bind", "/usr", "/usr"]
    if "--disable-userns" in bwrap_options():  # bwrap >= 0.8: no user namespace to regain them in
        cmd.insert(3, "--disable-userns")
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            cmd += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            cmd += ["--ro-bind", top, top]
    # /tmp is a relative link into the home folder, made before the environment is mounted: an
    # environment that lives under /tmp (a checkout in /tmp) then gets its mount point in there.
    cmd += ["--size", str(limits.disk_bytes), "--tmpfs", HOME, "--dir", f"{HOME}/.tmp",
            "--symlink", f"{HOME.lstrip('/')}/.tmp", "/tmp"]
    for path in environment():
        cmd += ["--ro-bind", path, path]
    cmd += ["--ro-bind", str(course_lib_parent / "course_lib"), "/course/course_lib",
            "--ro-bind", str(HARNESS), "/grader/harness.py", "--ro-bind", str(workdir / "program.pt"), PROGRAM,
            "--remount-ro", "/dev", "--remount-ro", "/", "--chdir", HOME]
    for key, value in sandbox_env().items():
        cmd += ["--setenv", key, value]
    return cmd + ["--"] + argv


def environment() -> list:
    """The folders of the Python environment the sandbox mounts read-only, at their own paths."""
    return list(_environment(sys.base_prefix, sys.prefix))


@functools.lru_cache(maxsize=4)
def _environment(base_prefix: str, prefix: str) -> tuple:  # read after every reply: worked out once
    return tuple(sorted({os.path.realpath(base_prefix), os.path.realpath(prefix), prefix}))


def home_entries() -> int:
    """Files and folders in a fresh sandbox's home: the folder itself, ``.tmp``, and the mount
    points made in ``.tmp`` for an environment that lives under ``/tmp``."""
    return _home_entries(_environment(sys.base_prefix, sys.prefix))


@functools.lru_cache(maxsize=4)
def _home_entries(environment: tuple) -> int:
    tmp = Path("/tmp")
    made = {folder for path in map(Path, environment)
            for folder in (path, *path.parents) if folder.is_relative_to(tmp) and folder != tmp}
    return 2 + len(made)


def sandbox_env() -> dict:
    return {"HOME": HOME, "PYTHONPATH": "/course", "PYTHONNOUSERSITE": "1", "PYTHONDONTWRITEBYTECODE": "1",
            "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MPLBACKEND": "Agg", "COURSE_FAST": "1",
            "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "LANG": "C.UTF-8"}


# What bubblewrap runs, as the sandbox's process 1, when the student's process comes from the fork
# server: it keeps the sandbox's namespaces alive until the grader stops it, reaps what the student's
# code leaves behind (as bubblewrap's own init does), and ignores every signal, so that nothing in
# the sandbox can end it (the kernel delivers no signal to a PID namespace's process 1 from inside
# unless it has a handler). It says it is ready on the descriptor named by its argument.
HOLDER = """import os, signal
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
ready = int(os.sys.argv[1])
os.write(ready, b"1")
os.close(ready)
while True:
    signal.sigwait({signal.SIGCHLD})
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass
"""


class ForkServer:
    """``grader/forkserver.py``, started on first use by each grading process: a fresh Python
    (exec'd, with the sandbox's environment) that has imported torch and forks each notebook's
    student process into that notebook's own bubblewrap sandbox."""

    def __init__(self):
        self.process, self.sock, self.owner = None, None, os.getpid()

    def start(self) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.process = subprocess.Popen(
            [sys.executable, "-s", "-B", str(FORKSERVER), str(child.fileno())], env=sandbox_env(), cwd="/",
            pass_fds=(child.fileno(),), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True)
        child.close()
        self.sock = parent
        try:
            self._reply(120)  # importing torch: 3 s of CPU here, minutes on a machine under heavy load
        except (OSError, ValueError):
            self.close()
            raise

    def _reply(self, seconds: float) -> dict:
        if not select.select([self.sock], [], [], seconds)[0]:
            raise OSError(f"the fork server did not answer within {seconds:g} s")
        data = self.sock.recv(1 << 16)
        if not data:
            raise OSError("the fork server has ended")
        return json.loads(data)

    def spawn(self, request: dict, fds: list) -> int:
        """Fork a process that joins the sandbox ``request`` names; its process ID."""
        if self.process is None or self.process.poll() is not None:
            self.start()
        socket.send_fds(self.sock, [json.dumps(request).encode()], fds)
        return int(self._reply(30)["pid"])

    def close(self) -> None:
        if self.process is not None:
            self.sock.close()
            self.process.kill()
            self.process.wait()
            self.process = None


_fork_server = None
fork_server_problem = ""  # why this process grades with a fresh Python per notebook, if it does


def fork_server() -> ForkServer:
    """This process's fork server (a worker forked from a process that had one starts its own)."""
    global _fork_server
    if _fork_server is None or _fork_server.owner != os.getpid():
        _fork_server = ForkServer()
    return _fork_server


class Sandbox:
    """One student process: start it, run its cells, call into it, stop it."""

    def __init__(self, workdir: Path, limits: Limits, sandboxed: bool, repo: Path, forked: bool = True):
        self.workdir, self.limits, self.sandboxed, self.repo = workdir, limits, sandboxed, repo
        self.forked = forked and sandboxed  # the student's process forked from the fork server
        self.process = None  # bubblewrap (or, unsandboxed, the harness)
        self._status_r = -1  # forked: the pipe on which the fork server's child says how the harness ended
        self._root = None  # the sandbox's / seen from here, to count its files and processes
        self._handles = itertools.count()
        self._cpu_start = 0.0  # the sandbox's CPU seconds when the current budget began
        self._cpu_now = 0.0  # the sandbox's CPU seconds at the last reading
        self._cpu_before = 0.0  # CPU seconds of this notebook's earlier sandboxes (restarted without a cell)
        self.library = workdir / "library"  # the course_lib the student sees, without solutions

    def prepare(self, withheld: list, assignment: str) -> None:
        """The copy of ``course_lib`` the sandbox mounts: the withheld solutions' code left out."""
        if not self.library.exists():
            stubbed_copy(self.repo / "course_lib", self.library / "course_lib", withheld, assignment)

    def start(self, program: dict) -> None:
        """Start the harness on ``program`` (its cells, what to withhold); each cell's output goes
        to ``output/cell<N>.txt`` here, through a file descriptor handed to the sandbox. Forked
        (the default, sandboxed), the harness is forked from this process's fork server into a
        fresh sandbox; if the fork server cannot work here, every later notebook of this process
        starts a fresh Python instead (``fork_server_problem`` says why)."""
        global fork_server_problem
        if len(program["cells"]) + 5 > MAX_PASSED_FDS:  # its descriptors would not fit in one message
            self.forked = False
        if self.forked and not fork_server_problem:
            try:
                return self._start(program, forked=True)
            except ForkServerFailed as e:
                fork_server_problem = str(e)
                print(f"grader: starting a fresh Python per notebook: {e}", file=sys.stderr, flush=True)
        self.forked = False
        return self._start(program, forked=False)

    def _start(self, program: dict, forked: bool) -> None:
        outputs = self.workdir / "output"
        outputs.mkdir(exist_ok=True)
        names = [f"cell{index}.txt" for index, _, _ in program["cells"]] + ["calls.txt"]
        fds = [os.open(outputs / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600) for name in names]
        processes = self.limits.processes if self.sandboxed else 0
        if forked:  # the harness's descriptors are numbered by the fork server (forkserver.place);
            # its user namespace also holds the fork server's child that waits for it
            program = dict(program, outputs=list(range(5, 5 + len(fds))), processes=processes + 1)
        else:
            program = dict(program, outputs=fds, processes=processes)
        torch.save(program, self.workdir / "program.pt")
        self._cpu_before += self._cpu_now
        self._cpu_start = self._cpu_now = 0.0
        req_r, self._req_w = os.pipe()
        self._res_r, res_w = os.pipe()
        info_r, info_w = os.pipe()
        ready_r, ready_w = os.pipe() if forked else (-1, -1)
        harness = [sys.executable, "-s", "-B", "/grader/harness.py", PROGRAM, str(req_r), str(res_w)]
        if self.sandboxed:
            holder = [sys.executable, "-S", "-I", "-c", HOLDER, str(ready_w)]
            argv = bwrap_command(self.workdir, self.library, holder if forked else harness, self.limits)
            argv[1:1] = ["--info-fd", str(info_w)] + (["--as-pid-1"] if forked else [])
            env = None
        else:
            argv = [sys.executable, "-s", "-B", str(HARNESS), str(self.workdir / "program.pt"), str(req_r), str(res_w)]
            env = dict(sandbox_env(), HOME=str(self.workdir), PYTHONPATH=str(self.library))
        passed = (info_w, ready_w) if forked else (req_r, res_w, info_w, *fds)
        # RLIMIT_CPU is the kernel's backstop behind the grader's own CPU watch: above the notebook's
        # limit, so that the watch (which names the limit) always acts first.
        rlimits = {"RLIMIT_FSIZE": (self.limits.output_bytes,) * 2, "RLIMIT_AS": (self.limits.memory_bytes,) * 2,
                   "RLIMIT_CORE": (0, 0), "RLIMIT_CPU": (int(self.limits.notebook_s) + 30, int(self.limits.notebook_s) + 35)}
        log = os.open(self.workdir / "harness.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # the harness's own errors
        try:
            self.process = subprocess.Popen(
                argv, cwd=self.workdir, env=env, pass_fds=passed, start_new_session=True,
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
                preexec_fn=lambda: [resource.setrlimit(getattr(resource, name), value) for name, value in rlimits.items()])
            os.close(info_w)
            if forked:
                os.close(ready_w)
            self._root = self._sandbox_root(info_r) if self.sandboxed else None
            os.close(info_r)
            try:
                if self.sandboxed and self._root is None:
                    raise OSError("bubblewrap did not say which process it started")
                self._wait_for_proc()
                self.cpu_seconds()
            except OSError as e:  # fail closed: a limit we cannot watch is a limit we cannot enforce
                self.stop()
                raise SandboxUnavailable(f"the sandbox's process information was unavailable ({e}); "
                                         "nothing of this notebook was graded") from None
            if forked:
                self._fork_into(rlimits, [log, req_r, res_w, *fds], ready_r)
        finally:
            for fd in (req_r, res_w, log, *fds) + ((ready_r,) if forked else ()):
                os.close(fd)

    def _fork_into(self, rlimits: dict, fds: list, ready: int) -> None:
        """Have the fork server start the harness in this sandbox (``forkserver.py``): it joins the
        namespaces of the sandbox's process 1 (``HOLDER``), whose root folder must be the sandbox's."""
        if not select.select([ready], [], [], 10)[0] or os.read(ready, 1) != b"1":
            self.stop()
            raise SandboxUnavailable("the sandbox's process information was unavailable (its process 1 did "
                                     "not start); nothing of this notebook was graded")
        holder = int(self._root.split("/")[2])
        status_r, status_w = os.pipe()
        try:
            fork_server().spawn({"holder": holder, "root": self._root_id(), "rlimits": rlimits},
                                [status_w, *fds])
        except (OSError, ValueError, KeyError) as e:
            os.close(status_r)
            self.stop()
            fork_server().close()
            raise ForkServerFailed(f"the fork server could not start ({e})") from None
        finally:
            os.close(status_w)
        self._status_r = status_r
        joined = self._status(10)
        if joined != {"joined": True}:
            self.stop()
            raise ForkServerFailed(f"the fork server could not join the sandbox ({joined})")

    def _root_id(self) -> list:
        """The sandbox's root folder (device, inode): the fork server's child checks it joined that one."""
        root = os.stat(self._root)
        return [root.st_dev, root.st_ino]

    def _status(self, seconds: float):
        """The next line the fork server's child writes on the status pipe, as JSON; ``None`` if it
        wrote nothing more within ``seconds`` (or ended)."""
        line, deadline = b"", time.monotonic() + seconds
        while not line.endswith(b"\n"):
            if not select.select([self._status_r], [], [], max(0.0, deadline - time.monotonic()))[0]:
                return None
            byte = os.read(self._status_r, 1)
            if not byte:
                return None
            line += byte
        return json.loads(line)

    def _exit_code(self, seconds: float = None):
        """How the student's process ended: its exit code, negative for a signal, ``None`` unknown."""
        if self._status_r < 0:
            try:
                return self.process.wait(timeout=seconds) if self.process else None
            except subprocess.TimeoutExpired:
                return None
        message = self._status(5 if seconds is None else seconds)
        return message.get("exit") if isinstance(message, dict) else None

    def _wait_for_proc(self, seconds: float = 10.0) -> None:
        """Wait until the sandbox is set up: bwrap names its process before it changes root and
        mounts ``/proc``, and the harness it mounts last tells the two apart."""
        deadline = time.monotonic() + seconds
        while self._root and not (os.path.isfile(self._root + PROGRAM) and os.path.isdir(self._root + "/proc/1")):
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise OSError(f"{self._root}/proc did not appear within {seconds:g} s")
            time.sleep(0.01)

    @staticmethod
    def _sandbox_root(info_r: int):
        """The sandbox's ``/`` seen from here (``/proc/<pid>/root``), from the JSON bwrap writes on
        ``--info-fd``; ``None`` if bwrap said nothing within 10 s."""
        text, deadline = b"", time.monotonic() + 10
        while b"}" not in text and select.select([info_r], [], [], max(deadline - time.monotonic(), 0))[0]:
            chunk = os.read(info_r, 4096)
            if not chunk:
                break
            text += chunk
        try:
            return f"/proc/{int(json.loads(text)['child-pid'])}/root"
        except (ValueError, KeyError, TypeError):
            return None

    def cpu_seconds(self) -> float:
        """CPU time (user and system) of every process of the student's, running or reaped, in
        seconds: in the sandbox, every process its ``/proc`` lists; unsandboxed, the harness's
        session. ``OSError`` when that information cannot be read."""
        proc = self._root + "/proc" if self._root else "/proc"
        total = 0
        for name in os.listdir(proc):
            if not name.isdigit():
                continue
            try:
                with open(f"{proc}/{name}/stat", "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
            except OSError:  # that process ended meanwhile
                continue
            if self._root or int(fields[3]) == self.process.pid:  # fields[3]: its session
                total += sum(int(v) for v in fields[11:15])  # utime, stime, cutime, cstime
        self._cpu_now = max(self._cpu_now, total / CLOCK_TICKS)
        return total / CLOCK_TICKS

    def notebook_cpu(self) -> float:
        """CPU seconds this notebook's student processes have used so far, in every sandbox it
        took (as last read: 4 times a second while the student's code runs)."""
        return self._cpu_before + self._cpu_now

    def begin(self) -> None:
        """Start the CPU clock of a new budget, from the last reading: every message read has just
        read it (``over_limit``), and the student's process has been waiting for us since, so
        reading ``/proc`` again would find the same (whatever it used meanwhile counts against the
        new budget, never for it)."""
        self._cpu_start = self._cpu_now

    def over_limit(self, budget: "Budget") -> str:
        """What the student's code has too much of now (CPU time, files, processes), or ``""``.
        RLIMIT_NPROC already caps processes, except when the grader runs as root: the kernel
        exempts root's. Unreadable process information while it runs stops it (fail closed)."""
        try:
            if self.cpu_seconds() - self._cpu_start > budget.cpu_s:
                return f"ran past {budget.limit}"
            if not self._root:
                return ""
            fs = os.statvfs(self._root + HOME)
            files = fs.f_files - fs.f_ffree - home_entries()  # less what the sandbox made there
            processes = sum(name.isdigit() for name in os.listdir(self._root + "/proc")) - 1  # less its process 1
        except OSError as e:
            if self.process is None or self.process.poll() is not None:
                return ""  # the sandbox has just ended; the caller reads why
            self.stop()
            raise SandboxUnavailable(f"the sandbox's process information became unavailable ({e}); "
                                     "the rest of this notebook was not graded") from None
        if files > self.limits.files:
            return f"created more than {self.limits.files:,} files (the limit per student)"
        return (f"started more than {self.limits.processes} processes (the limit per student)"
                if processes > self.limits.processes else "")

    def stop(self, graceful: bool = False) -> None:
        """Kill the student's process; ``graceful``: first let it end by closing its request pipe
        (so every process in the sandbox is reaped and its CPU time counted)."""
        if self.process is None:
            return
        if graceful:
            os.close(self._req_w)
            self._req_w = -1
            self._exit_code(2)
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()
        for fd in (self._req_w, self._res_r, self._status_r):
            if fd >= 0:
                os.close(fd)
        self._req_w = self._res_r = self._status_r = -1
        self.process = None

    @property
    def running(self) -> bool:
        return self.process is not None

    def next_message(self, budget: "Budget", doing: str) -> dict:
        """The next frame from the student's process; ``StudentProcessEnded`` past the budget."""
        try:
            size = struct.unpack(">Q", self._read(8, budget, doing))[0]
            if size > MAX_FRAME:
                raise ValueError(f"a frame of {size} bytes")
            data = self._read(size, budget, doing)
            if too_much := self.over_limit(budget):  # what the call used, now that it answered
                self.stop()
                raise StudentProcessEnded(f"{doing} {too_much}")
            message = loads_plain(data)
            if not isinstance(message, dict):
                raise TypeError(type(message).__name__)
            return message
        except (StudentProcessEnded, SandboxUnavailable):
            raise
        except Exception as e:  # anything unreadable: the student's code wrote on our pipe
            self.stop()
            raise StudentProcessEnded(f"{doing} sent the grader something unreadable ({type(e).__name__})") from e

    def _read(self, n: int, budget: "Budget", doing: str) -> bytes:
        """``n`` bytes from the student's process. Its limits are checked every time it has kept us
        waiting for a quarter of a second and at the end of every message (``next_message``), not
        before each read: most calls answer within milliseconds, and a check reads the sandbox's
        ``/proc``."""
        chunks = []
        while n:
            left = budget.deadline - time.monotonic()
            if not select.select([self._res_r], [], [], max(0.0, min(left, 0.25)))[0]:
                if too_much := self.over_limit(budget):
                    self.stop()
                    raise StudentProcessEnded(f"{doing} {too_much}")
                if left <= 0.25:
                    self.stop()
                    raise StudentProcessEnded(f"{doing} ran past {budget.wall_limit}")
                continue
            chunk = os.read(self._res_r, min(n, 1 << 20))
            if not chunk:
                code = self._exit_code()
                self.stop()
                raise StudentProcessEnded(f"{doing} ended the Python process ({exit_cause(code)})")
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    def request(self, message: dict, budget: "Budget", doing: str) -> dict:
        self.begin()
        data = dumps(message)  # the sandbox trusts us, not the reverse
        frame = memoryview(struct.pack(">Q", len(data)) + data)
        try:
            while frame:
                frame = frame[os.write(self._req_w, frame):]
        except OSError:
            code = self._exit_code() if self.process else None
            self.stop()
            raise StudentProcessEnded(f"{doing} found the Python process gone ({exit_cause(code)})") from None
        return self.next_message(budget, doing)

    def new_handle(self) -> int:
        return next(self._handles)


def exit_cause(code) -> str:
    if code is None:
        return "stopped"
    if code == 128 + signal.SIGXCPU:  # bubblewrap passes on a child killed by signal N as 128 + N
        code = -signal.SIGXCPU
    if code < 0:
        name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
        why = {"SIGKILL": ": out of memory?", "SIGXCPU": ": the kernel's CPU-time limit per process"}.get(name, "")
        return f"killed by {name}{why}"
    return f"exit code {code}"


def read_output(path: Path, limit: int) -> str:
    """What a cell printed (at most ``limit`` bytes were allowed; the first 10,000 characters kept)."""
    if not path.is_file():
        return ""
    with open(path, "rb") as f:
        text = f.read(10_000).decode("utf-8", "replace")
    size = path.stat().st_size
    if size > 10_000:
        text += f"\n[... {size - 10_000:,} more bytes of output not shown]"
    return text
