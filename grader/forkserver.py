"""A Python that has imported torch once, and forks each notebook's student process from there.

    python -s -B forkserver.py SOCKET_FD

A standalone script, started by the grading worker (``sandbox.ForkServer``) with the sandbox's
environment and nothing of the grader's: it is a fresh program (exec'd, not forked from the
grader), it imports only what the harness imports (torch above all: about 3 s of CPU that every
notebook paid before), and it runs no student code itself. For each notebook the grader starts
a bubblewrap sandbox as before, with ``sleep infinity`` where the harness used to be, and sends
here, over ``SOCKET_FD`` (a Unix socket), the process ID of that ``sleep`` (the *holder*), the
identity of the sandbox's root folder, the limits, and the file descriptors the harness needs.
The grader never sends anything of its own beyond that; replies are the process IDs it forked.

This process forks a child that **joins the holder's namespaces** (``setns``: its user
namespace's parent, then mount, PID, network, IPC, UTS and cgroup, then the holder's own user
namespace, the one bubblewrap made so that no further user namespace can be created), checks that
its root folder is the sandbox's, drops every capability (bounding, ambient, effective, permitted
and inheritable sets), sets ``no_new_privs`` and the limits, then forks the student's process,
which lands in the sandbox's PID namespace, starts a session of its own and runs
``/grader/harness.py`` (the sandbox's read-only copy) as ``__main__`` with only the file descriptors
it was given. The middle process, outside that PID namespace and that session (the student's code
can neither see nor signal it), waits for it and writes its exit status on the status pipe, so
the grader reads exit codes as it read bubblewrap's.

Every step that fails stops the child before any student code runs; the grader then stops that
sandbox and starts a fresh Python in a new one instead (``sandbox.Sandbox.start``). Protocol on the
status pipe, one JSON line each: ``{"joined": true}`` or ``{"error": "..."}``, then ``{"exit": code}``
(a signal N as 128 + N, as bubblewrap reports it).
"""

# What the harness imports (harness.py: keep these in step) is imported here, so that each child has it.
import builtins  # noqa: F401
import collections  # noqa: F401
import ctypes
import fcntl
import importlib
import io  # noqa: F401
import json
import math  # noqa: F401
import os
import pickle  # noqa: F401
import resource
import runpy
import signal
import socket
import struct  # noqa: F401
import sys
import traceback
import types  # noqa: F401

import torch  # noqa: F401

CLONE = {"user": 0x10000000, "mnt": 0x00020000, "pid": 0x20000000, "net": 0x40000000,
         "ipc": 0x08000000, "uts": 0x04000000, "cgroup": 0x02000000}
NS_GET_USERNS, NS_GET_PARENT = 0xB701, 0xB702  # ioctl(2) on a namespace file descriptor
PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS, PR_SET_PDEATHSIG, PR_CAP_AMBIENT = 24, 38, 1, 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
CAP_VERSION_3 = 0x20080522
HARNESS, HOME = "/grader/harness.py", "/home/student"
FIRST_FD = 3  # the harness gets its descriptors from 3 on: request, reply, then one per output file

libc = ctypes.CDLL(None, use_errno=True)


class CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def setns(fd: int, kind: str) -> None:
    check(libc.setns(fd, CLONE[kind]), f"setns({kind})")


def same(fd_a: int, fd_b: int) -> bool:
    a, b = os.fstat(fd_a), os.fstat(fd_b)
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def drop_capabilities(last_cap: int) -> None:
    for cap in range(last_cap + 1):
        check(libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0), f"dropping capability {cap} from the bounding set")
    check(libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "clearing the ambient set")
    header, data = CapHeader(CAP_VERSION_3, 0), (CapData * 2)()
    check(libc.capset(ctypes.byref(header), data), "capset")
    check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")


def join(request: dict) -> None:
    """Enter the holder's namespaces and give up every privilege (see the module's docstring)."""
    holder = int(request["holder"])
    with open("/proc/sys/kernel/cap_last_cap") as f:
        last_cap = int(f.read())
    ns = {kind: os.open(f"/proc/{holder}/ns/{kind}", os.O_RDONLY | os.O_CLOEXEC) for kind in CLONE}
    own = {kind: os.open(f"/proc/self/ns/{kind}", os.O_RDONLY | os.O_CLOEXEC) for kind in CLONE}
    inner = ns["user"]
    outer = fcntl.ioctl(inner, NS_GET_PARENT)  # bubblewrap's first user namespace, which owns the rest
    owner = fcntl.ioctl(ns["mnt"], NS_GET_USERNS)
    if not same(owner, outer):
        raise OSError("the sandbox's mount namespace is not owned by its first user namespace")
    if not same(fcntl.ioctl(outer, NS_GET_PARENT), own["user"]):
        raise OSError("the sandbox's user namespaces are not children of this one")
    setns(outer, "user")
    for kind in ("mnt", "pid", "net", "ipc", "uts", "cgroup"):
        if not same(ns[kind], own[kind]):
            setns(ns[kind], kind)
    setns(inner, "user")
    drop_capabilities(last_cap)
    root = os.stat("/")
    if [root.st_dev, root.st_ino] != list(request["root"]):
        raise OSError("the root folder after joining is not the sandbox's")
    for fd in (*ns.values(), *own.values(), outer, owner):
        os.close(fd)
    os.chdir(HOME)
    check(libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "parent-death signal")
    for name, (soft, hard) in request["rlimits"].items():
        resource.setrlimit(getattr(resource, name), (soft, hard))


def place(fds: list, null: int) -> None:
    """Make ``fds`` the descriptors 3, 4, ... (``null`` on 0 and 1, the log on 2) and close every other."""
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 1000) for fd in [null, null, *fds]]
    os.closerange(0, 1000)
    for target, fd in enumerate(high):
        os.dup2(fd, target, inheritable=True)
    os.closerange(1000, os.sysconf("SC_OPEN_MAX"))


def student(fds: list) -> None:
    """The student's process: the harness, as ``python -s -B /grader/harness.py PROGRAM 3 4`` runs it."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    os.setsid()  # a session and process group of its own: killpg(0) cannot reach the process waiting for it
    log, req, res, *outputs = fds
    null = os.open("/dev/null", os.O_RDWR)
    place([log, req, res, *outputs], null)  # log -> 2, request -> 3, reply -> 4, outputs -> 5, ...
    os.environ["PWD"] = HOME
    sys.argv = [HARNESS, "/grader/program.pt", str(FIRST_FD), str(FIRST_FD + 1)]
    sys.orig_argv = [sys.executable, "-s", "-B", *sys.argv]
    sys.path[0] = os.path.dirname(HARNESS)
    sys.path_importer_cache.clear()
    importlib.invalidate_caches()
    check(libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "parent-death signal")
    code = 0
    try:
        runpy.run_path(HARNESS, run_name="__main__")
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:  # noqa: BLE001 (the harness's own error: to its log, as Python would)
        traceback.print_exc()
        code = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001
            pass
    os._exit(code)


def middle(request: dict, fds: list) -> None:
    """Join the sandbox, start the student's process in it, report how it ended."""
    status, *rest = fds
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)

    def say(message: dict) -> None:
        os.write(status, (json.dumps(message) + "\n").encode())

    try:
        join(request)
    except BaseException as e:  # noqa: BLE001 (nothing of the student's has run: say why, end)
        say({"error": f"{type(e).__name__}: {e}"})
        os._exit(1)
    say({"joined": True})
    pid = os.fork()
    if pid == 0:
        os.close(status)
        student(rest)
    os.closerange(0, status)  # nothing but the status pipe stays open here
    os.closerange(status + 1, os.sysconf("SC_OPEN_MAX"))
    _, wait_status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(wait_status)
    say({"exit": 128 - code if code < 0 else code})  # a signal N as 128 + N, as bubblewrap reports it
    os._exit(0)


def serve(sock: socket.socket) -> None:
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the middle processes are reaped by the kernel
    sock.sendall(b'{"ready": true}')
    while True:
        message, fds, _, _ = socket.recv_fds(sock, 1 << 16, 253)
        if not message:
            return  # the grader has gone
        pid = os.fork()
        if pid == 0:
            try:
                sock.close()
                middle(json.loads(message), fds)
            finally:
                os._exit(1)
        for fd in fds:
            os.close(fd)
        sock.sendall(json.dumps({"pid": pid}).encode())


if __name__ == "__main__":
    serve(socket.socket(fileno=int(sys.argv[1])))
