"""The grader's side of the sandbox: start the student's process, run its cells, call into it.

The student's answer cells run in ``tools/grader_harness.py`` under bubblewrap (``bwrap``): its
home folder is an empty in-memory filesystem of a fixed size (``/tmp`` points into it), the only
writable place; the Python environment (the virtual environment and its base interpreter) and
``course_lib`` are mounted read-only; there is no network, no ``/proc`` of other processes, no
capability (so no remounting, even when the grader runs as root), and nothing else of this machine
(no ``assignments/``, no gradebook, no other student, not even the grader's own folder: what each
cell prints goes to a file the grader opened and handed over). Every limit is enforced from here: a
cell that runs too long, creates too many files or a process that dies is killed or noticed by this
side, whatever the student's code does.

Proxies stand in for the student's functions and Function classes in the grader's process: a call
sends its arguments to the sandbox and brings back plain values (``torch.load(weights_only=True)``),
mirroring in-place changes to tensors, dicts and modules that were passed in.
"""

import functools
import io
import itertools
import json
import os
import pickle
import resource
import select
import shutil
import signal
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

HARNESS = Path(__file__).resolve().with_name("grader_harness.py")
HOME = "/home/student"  # the student's folder inside the sandbox
PROGRAM = "/grader/program.pt"  # the cells to run, inside the sandbox
MAX_FRAME = 256 * 2**20  # bytes in one answer from the sandbox (a trained MLP's weights: ~0.5 MB)


@dataclass(frozen=True)
class Limits:
    """What one submission may use; every status that names a limit reads it from here."""

    cell_s: float = 60.0  # one answer cell, or one test cell's calls into the student's code
    notebook_s: float = 300.0  # everything of one notebook together
    output_bytes: int = 1_000_000  # one cell's printed output (and any file it writes)
    memory_bytes: int = 4 * 2**30  # each of the student's processes' address space (torch on a CPU fits in 1)
    disk_bytes: int = 64 * 2**20  # the student's home folder (and /tmp), in memory: a trained MLP is 0.5 MB
    files: int = 1000  # files and folders in it
    processes: int = 16  # processes and threads in the sandbox (torch on one thread uses 3)

    def describe(self) -> str:
        return (f"{self.cell_s:g} s per cell, {self.notebook_s:g} s per notebook, "
                f"{self.output_bytes / 1e6:g} MB of output per cell, {self.memory_bytes / 2**30:g} GB of memory, "
                f"{self.disk_bytes / 2**20:g} MB and {self.files:,} files of disk, "
                f"{self.processes} processes or threads")


@dataclass(frozen=True)
class Budget:
    """A deadline (``time.monotonic()``) and the limit it comes from, for the status line."""

    deadline: float
    limit: str

    @classmethod
    def for_cell(cls, limits: Limits, notebook_deadline: float) -> "Budget":
        cell_end = time.monotonic() + limits.cell_s
        if cell_end <= notebook_deadline:
            return cls(cell_end, f"{limits.cell_s:g} s (the limit per cell)")
        return cls(notebook_deadline, f"the notebook's {limits.notebook_s:g} s (the limit per notebook)")


class SandboxUnavailable(Exception):
    """bubblewrap is missing or does not work on this machine."""


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
    return sorted({os.path.realpath(sys.base_prefix), os.path.realpath(sys.prefix), sys.prefix})


def home_entries() -> int:
    """Files and folders in a fresh sandbox's home: the folder itself, ``.tmp``, and the mount
    points made in ``.tmp`` for an environment that lives under ``/tmp``."""
    tmp = Path("/tmp")
    made = {folder for path in map(Path, environment())
            for folder in (path, *path.parents) if folder.is_relative_to(tmp) and folder != tmp}
    return 2 + len(made)


def sandbox_env() -> dict:
    return {"HOME": HOME, "PYTHONPATH": "/course", "PYTHONNOUSERSITE": "1", "PYTHONDONTWRITEBYTECODE": "1",
            "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MPLBACKEND": "Agg", "COURSE_FAST": "1",
            "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "LANG": "C.UTF-8"}


class Sandbox:
    """One student process: start it, run its cells, call into it, stop it."""

    def __init__(self, workdir: Path, limits: Limits, sandboxed: bool, repo: Path):
        self.workdir, self.limits, self.sandboxed, self.repo = workdir, limits, sandboxed, repo
        self.process = None
        self._root = None  # the sandbox's / seen from here, to count its files and processes
        self._handles = itertools.count()

    def start(self, program: dict) -> None:
        """Start the harness on ``program`` (its cells, what to withhold); each cell's output goes
        to ``output/cell<N>.txt`` here, through a file descriptor handed to the sandbox."""
        outputs = self.workdir / "output"
        outputs.mkdir(exist_ok=True)
        names = [f"cell{index}.txt" for index, _, _ in program["cells"]] + ["calls.txt"]
        fds = [os.open(outputs / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600) for name in names]
        program = dict(program, outputs=fds, processes=self.limits.processes if self.sandboxed else 0)
        torch.save(program, self.workdir / "program.pt")
        req_r, self._req_w = os.pipe()
        self._res_r, res_w = os.pipe()
        info_r, info_w = os.pipe()
        if self.sandboxed:
            argv = bwrap_command(self.workdir, self.repo, [sys.executable, "-s", "-B", "/grader/harness.py",
                                                           PROGRAM, str(req_r), str(res_w)], self.limits)
            argv[1:1] = ["--info-fd", str(info_w)]
            env = None
        else:
            argv = [sys.executable, "-s", "-B", str(HARNESS), str(self.workdir / "program.pt"), str(req_r), str(res_w)]
            env = dict(sandbox_env(), HOME=str(self.workdir), PYTHONPATH=str(self.repo))
        output, memory = self.limits.output_bytes, self.limits.memory_bytes
        with open(self.workdir / "harness.log", "wb") as log:  # the harness's own errors, if any
            self.process = subprocess.Popen(
                argv, cwd=self.workdir, env=env, pass_fds=(req_r, res_w, info_w, *fds), start_new_session=True,
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
                preexec_fn=lambda: (resource.setrlimit(resource.RLIMIT_FSIZE, (output, output)),
                                    resource.setrlimit(resource.RLIMIT_AS, (memory, memory)),
                                    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))))
        for fd in (req_r, res_w, info_w, *fds):
            os.close(fd)
        self._root = self._sandbox_root(info_r) if self.sandboxed else None
        os.close(info_r)

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

    def over_limit(self) -> str:
        """What the student's code has too many of now (files, processes), or ``""``. RLIMIT_NPROC
        already caps processes, except when the grader runs as root: the kernel exempts root's."""
        if not self._root:
            return ""
        try:
            fs = os.statvfs(self._root + HOME)
            files = fs.f_files - fs.f_ffree - home_entries()  # less what the sandbox made there
            processes = sum(name.isdigit() for name in os.listdir(self._root + "/proc")) - 1  # less bwrap's
        except OSError:  # the sandbox has just ended
            return ""
        if files > self.limits.files:
            return f"created more than {self.limits.files:,} files"
        return f"started more than {self.limits.processes} processes" if processes > self.limits.processes else ""

    def stop(self, graceful: bool = False) -> None:
        """Kill the student's process; ``graceful``: first let it end by closing its request pipe
        (so every process in the sandbox is reaped and its CPU time counted)."""
        if self.process is None:
            return
        if graceful:
            os.close(self._req_w)
            self._req_w = -1
            try:
                self.process.wait(timeout=2)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()
        for fd in (self._req_w, self._res_r):
            if fd >= 0:
                os.close(fd)
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
            message = torch.load(io.BytesIO(self._read(size, budget, doing)), weights_only=True)
            if not isinstance(message, dict):
                raise TypeError(type(message).__name__)
            return message
        except StudentProcessEnded:
            raise
        except Exception as e:  # anything unreadable: the student's code wrote on our pipe
            self.stop()
            raise StudentProcessEnded(f"{doing} sent the grader something unreadable ({type(e).__name__})")

    def _read(self, n: int, budget: "Budget", doing: str) -> bytes:
        chunks = []
        while n:
            if too_many := self.over_limit():  # checked 4 times a second while the student runs
                self.stop()
                raise StudentProcessEnded(f"{doing} {too_many} (the limit per student)")
            left = budget.deadline - time.monotonic()
            ready = select.select([self._res_r], [], [], min(left, 0.25))[0] if left > 0 else []
            if not ready and left <= 0.25:
                self.stop()
                raise StudentProcessEnded(f"{doing} ran past {budget.limit}")
            if not ready:
                continue
            chunk = os.read(self._res_r, min(n, 1 << 20))
            if not chunk:
                code = self.process.wait()
                self.stop()
                raise StudentProcessEnded(f"{doing} ended the Python process ({exit_cause(code)})")
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    def request(self, message: dict, budget: "Budget", doing: str) -> dict:
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)  # the sandbox trusts us, not the reverse
        frame = memoryview(struct.pack(">Q", len(data)) + data)
        try:
            while frame:
                frame = frame[os.write(self._req_w, frame):]
        except OSError:
            code = self.process.wait() if self.process else None
            self.stop()
            raise StudentProcessEnded(f"{doing} found the Python process gone ({exit_cause(code)})") from None
        return self.next_message(budget, doing)

    def new_handle(self) -> int:
        return next(self._handles)


def exit_cause(code) -> str:
    if code is None:
        return "stopped"
    if code < 0:
        name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
        return f"killed by {name}" + (": out of memory?" if name == "SIGKILL" else "")
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


# ---------------------------------------------------------------------------------------------
# proxies: the student's objects as the grader's test code sees them
# ---------------------------------------------------------------------------------------------

def _rebuild_neural_net(state_dict: dict):
    from course_lib.models import NeuralNet
    model = NeuralNet(int(state_dict["fc1.weight"].shape[1]))
    model.load_state_dict(state_dict)
    return model


# Modules a student's function may hand back, rebuilt here from their state_dict.
REBUILD = {"course_lib.models.NeuralNet": _rebuild_neural_net}


def from_wire(value):
    """A value from the sandbox as the test code expects it: a module rebuilt, an object it
    cannot bring back as a stand-in of the same type name (so a check can say "returned X")."""
    if isinstance(value, dict) and "__module__" in value and "state_dict" in value:
        rebuild = REBUILD.get(value["__module__"])
        if rebuild is None:
            raise TypeError(f"returned a {value['__module__'].rsplit('.', 1)[-1]}: the grader can "
                            f"only take back {', '.join(REBUILD)}")
        return rebuild(value["state_dict"])
    if isinstance(value, dict) and set(value) == {"__object__"}:
        return type(str(value["__object__"]), (), {})()
    if isinstance(value, list):
        return [from_wire(v) for v in value]
    if isinstance(value, tuple):
        return tuple(from_wire(v) for v in value)
    if isinstance(value, dict):
        return {k: from_wire(v) for k, v in value.items()}
    return value


@torch.no_grad()
def mirror(args, after, same) -> None:
    """Apply to the grader's arguments what the student's function did to its copies: tensors
    changed in place, dict entries changed in place or replaced, modules' new state."""
    for arg, state, kept in zip(args, after, same):
        if isinstance(arg, torch.Tensor) and isinstance(state, torch.Tensor) and state.shape == arg.shape:
            arg.copy_(state)
        elif isinstance(arg, dict) and isinstance(state, dict) and isinstance(state.get("entries"), dict):
            for key in [k for k in arg if k not in state["entries"]]:
                del arg[key]
            for key, value in state["entries"].items():
                old = arg.get(key)
                if key in (kept or ()) and isinstance(old, torch.Tensor) and isinstance(value, torch.Tensor) \
                        and value.shape == old.shape:
                    old.copy_(value)
                else:
                    arg[key] = from_wire(value)
        elif isinstance(arg, torch.nn.Module) and isinstance(state, dict) and "state_dict" in state:
            arg.load_state_dict(state["state_dict"])


def callable_proxy(code, name: str):
    """The student's function ``name``: runs in the sandbox on copies of the arguments."""

    def proxy(*args, **kwargs):
        reply = code.call({"op": "call", "name": name, "args": args, "kwargs": kwargs}, f"{name}(...)")
        mirror(args, reply.get("args", []), reply.get("same", []))
        return from_wire(reply.get("value"))

    proxy.__name__ = proxy.__qualname__ = name
    return proxy


def function_proxy(code, name: str):
    """The student's autograd Function class ``name``: forward and backward run in the sandbox
    (backward through a stand-in ctx, returning its raw gradients); autograd, gradcheck and the
    checks work on it here as on the original."""

    def forward(ctx, *inputs):
        handle = code.sandbox.new_handle()
        sent = tuple(t.detach() if isinstance(t, torch.Tensor) else t for t in inputs)
        reply = code.call({"op": "forward", "name": name, "inputs": sent, "handle": handle,
                           "needs": tuple(ctx.needs_input_grad)}, f"{name}.forward")
        ctx.sandbox_handle = handle
        return from_wire(reply.get("value"))

    def backward(ctx, *grad_outputs):
        reply = code.call({"op": "backward", "handle": ctx.sandbox_handle, "grads": grad_outputs},
                          f"{name}.backward")
        value = reply.get("value")
        return tuple(value) if isinstance(value, (list, tuple)) else value

    return type(name, (torch.autograd.Function,), {"forward": staticmethod(forward),
                                                   "backward": staticmethod(backward)})
