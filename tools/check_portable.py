"""Check that the lessons' saved outputs hold on any CPU: re-run them under several numeric setups.

    python tools/check_portable.py                    # every lesson, under every setup this CPU has
    python tools/check_portable.py --list             # the setups (and whether this CPU has each)
    python tools/check_portable.py -c default-1 -c avx2-2 notebooks/05_backprop_all_the_way.ipynb
    python tools/check_portable.py --assignments      # the assignments' sources too

Round-off depends on the CPU: ATen's kernels sum in a different order for each vector width
(``ATEN_CPU_CAPABILITY``: default, avx2, avx512), MKL picks its code path by CPU (``MKL_CBWR``),
and a sum split over threads adds in yet another order (``OMP_NUM_THREADS``). A lesson that prints
a number round-off can reach passes ``make test`` on the machine that saved it and fails on a
student's. This script runs ``make test``'s own nbval check (same sanitizer file, fast mode)
once per setup, each in its own environment, as many runs at a time as there are CPU cores, and
reports every cell whose output differed from the saved one, under which setups.

A cell that differs under every setup has a stale saved output (re-run ``make notebooks``); one
that differs under some of them prints round-off: print it as a bound the cell asserts, or at a
precision round-off cannot reach (see the README, "Lessons").

The assignments' sources (``--assignments``) are saved without outputs, so nbval compares none
there; the run checks that their cells (and their own asserts) still pass under every setup.

Exit status: 0 every run matched its saved outputs; 1 some cell differed or failed, or a run did
not finish; 2 bad arguments (an unknown setup, one this CPU cannot run, a path that is no notebook).
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SANITIZE = REPO / "tests" / "nbval_sanitize.cfg"
LESSONS = "notebooks/*.ipynb"
ASSIGNMENTS = "assignments/source/*/*.ipynb"
# Variables that choose a numeric code path: cleared from every run's environment, then set.
NUMERIC_VARS = ("ATEN_CPU_CAPABILITY", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "MKL_CBWR",
                "MKL_ENABLE_INSTRUCTIONS", "MKL_DEBUG_CPU_TYPE")
# Colour codes (pytest's junit report writes the escape character, illegal in XML, as "#x1B").
ANSI = re.compile(r"(\x1b|#x1B)\[[0-9;]*m")


@dataclass(frozen=True)
class Setup:
    """One numeric configuration: the variables a run sets, and what ATen must then report."""

    name: str
    capability: str  # ATEN_CPU_CAPABILITY
    threads: int  # OMP_NUM_THREADS
    mkl_cbwr: str = ""  # MKL_CBWR (only where torch uses MKL)
    default: bool = True  # run when no --config is given
    env: dict = field(init=False, compare=False)

    def __post_init__(self):
        env = {"ATEN_CPU_CAPABILITY": self.capability, "OMP_NUM_THREADS": str(self.threads)}
        if self.mkl_cbwr:
            env["MKL_CBWR"] = self.mkl_cbwr
        object.__setattr__(self, "env", env)

    def describe(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.env.items())


SETUPS = [
    Setup("default-1", "default", 1),  # the reference: what make notebooks saves outputs under
    Setup("default-2", "default", 2),
    Setup("avx2-1", "avx2", 1, default=False),
    Setup("avx2-2", "avx2", 2),
    Setup("avx512-2", "avx512", 2),  # where the CPU has AVX-512
    Setup("mkl-compatible", "avx2", 1, mkl_cbwr="COMPATIBLE"),  # where torch uses MKL
    Setup("mkl-avx2", "avx2", 2, mkl_cbwr="AVX2", default=False),
]
BY_NAME = {s.name: s for s in SETUPS}

def run_env(setup: Setup) -> dict:
    """This process's environment with the numeric variables replaced by ``setup``'s."""
    env = {k: v for k, v in os.environ.items() if k not in NUMERIC_VARS}
    env.update(setup.env, COURSE_FAST="1", PYTHONUNBUFFERED="1")
    env.pop("MPLBACKEND", None)  # as tools/run_notebooks.py: a non-inline backend drops figures
    return env


# What this machine offers: ATen's highest vector width (with no ATEN_CPU_CAPABILITY set, ATen picks
# the best the CPU has; set, it obeys even where the CPU lacks it, and dies of an illegal
# instruction), and whether torch uses MKL.
PROBE = ("import json, torch; print(json.dumps([torch.backends.cpu.get_cpu_capability(), "
         "torch.backends.mkl.is_available()]))")
WIDTH = {"default": 0, "avx2": 1, "avx512": 2}  # x86 only: elsewhere only "default" runs


def probe() -> tuple:
    """(ATen's highest capability here, lower-case; whether torch uses MKL)."""
    env = {k: v for k, v in os.environ.items() if k not in NUMERIC_VARS}
    result = subprocess.run([sys.executable, "-c", PROBE], env=env, cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        raise SystemExit(f"torch did not start: {result.stderr.strip()[-500:]}")
    capability, mkl = json.loads(result.stdout.strip().splitlines()[-1])
    return capability.lower(), mkl


def why_not(setup: Setup, machine: tuple) -> str:
    """'' if this machine can run ``setup``, else why not."""
    best, mkl = machine
    if WIDTH.get(setup.capability, 99) > WIDTH.get(best, 0):
        return f"this CPU's best ATen capability is {best}, not {setup.capability}"
    if setup.mkl_cbwr and not mkl:
        return "this torch is built without MKL"
    return ""


@dataclass
class Run:
    """The nbval check of one notebook under one setup."""

    setup: Setup
    notebook: Path
    seconds: float = 0.0
    cells: int = 0
    differed: dict = field(default_factory=dict)  # cell number -> nbval's message
    error: str = ""  # the run itself broke (no report, timeout)


def parse_junit(path: Path) -> tuple:
    """(cells checked, {cell number: message}) from a pytest --junitxml report of nbval items."""
    cells, differed = 0, {}
    for case in ET.parse(path).getroot().iter("testcase"):
        match = re.fullmatch(r"Cell (\d+)", case.get("name", ""))
        if not match:
            continue
        cells += 1
        for bad in list(case.findall("failure")) + list(case.findall("error")):
            text = bad.text or bad.get("message") or ""  # the message is the text, cut short
            differed[int(match.group(1))] = ANSI.sub("", text).strip()
    return cells, differed


def nbval_command(notebook: Path, report: Path) -> list:
    return [sys.executable, "-m", "pytest", "--nbval", "--nbval-sanitize-with", str(SANITIZE),
            "--nbval-current-env", "-p", "no:cacheprovider", "--color=no", "-q",
            "-c", str(REPO / "pyproject.toml"), "--rootdir", str(REPO),
            f"--junitxml={report}", str(notebook)]


def kernel_did_not_start(run: Run) -> str:
    """The error, when every cell of ``run`` failed in nbval's setup phase (its kernel did not
    start: a port taken by a kernel starting beside it, a slow start on a loaded machine), not in
    its output; ``""`` otherwise."""
    if not run.differed or not all("when = 'setup'" in m for m in run.differed.values()):
        return ""
    message = next(iter(run.differed.values()))
    errors = [line.strip() for line in message.splitlines() if re.match(r"^\s*E\s+\w+(Error|Exception)\b", line)]
    return errors[-1].lstrip("E ").strip() if errors else "nbval's setup failed"


def check(run: Run, timeout: int) -> Run:
    """Run nbval on ``run.notebook`` under ``run.setup``; fill in what differed. A run whose
    kernel did not start is run once more: that says nothing about the notebook's outputs."""
    run = check_once(run, timeout)
    why = kernel_did_not_start(run)
    if why:
        print(f"  {run.setup.name:<15} {run.notebook.name}: its kernel did not start ({why[:200]}); "
              "running it again", flush=True)
        run = check_once(Run(run.setup, run.notebook), timeout)
        if (again := kernel_did_not_start(run)):
            run.error, run.differed = f"its kernel did not start, twice ({again[:300]})", {}
    return run


def check_once(run: Run, timeout: int) -> Run:
    """One nbval run of ``run.notebook`` under ``run.setup``."""
    with tempfile.TemporaryDirectory(prefix="check_portable_") as tmp:
        report = Path(tmp) / "report.xml"
        start = time.perf_counter()
        try:
            result = subprocess.run(nbval_command(run.notebook, report), env=run_env(run.setup),
                                    cwd=REPO, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            run.error = f"did not finish within {timeout} s"
            return run
        finally:
            run.seconds = time.perf_counter() - start
        if not report.is_file():
            run.error = f"pytest exited {result.returncode} with no report:\n{result.stdout[-2000:]}"
            return run
        run.cells, run.differed = parse_junit(report)
        if result.returncode not in (0, 1) or (result.returncode == 1 and not run.differed):
            run.error = f"pytest exited {result.returncode}:\n{result.stdout[-2000:]}"
    return run


def where(path: Path) -> str:
    """``path`` relative to the repository when it lies in it."""
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def short(message: str, lines: int) -> str:
    kept = message.splitlines()
    more = f"\n      ... ({len(kept) - lines} more lines; --full shows them)" if len(kept) > lines else ""
    return "\n".join("      " + line for line in kept[:lines]) + more


def report(runs: list, setups: list, full: bool) -> int:
    """Print what differed, per setup and per cell; return the number of failing runs."""
    failing = 0
    print("\nper setup:")
    for setup in setups:
        mine = [r for r in runs if r.setup == setup]
        bad = [r for r in mine if r.differed or r.error]
        failing += len(bad)
        seconds = sum(r.seconds for r in mine)
        cells = sum(r.cells for r in mine)
        verdict = "ok" if not bad else "DIFFERS: " + "; ".join(
            f"{r.notebook.name} " + (f"cells {sorted(r.differed)}" if r.differed else "run failed")
            for r in bad)
        print(f"  {setup.name:<15} {len(mine)} notebooks, {cells} cells, {seconds:6.0f} s  {verdict}")
    cells = {}
    for r in runs:
        for number, message in r.differed.items():
            cells.setdefault((r.notebook, number), []).append((r.setup.name, message))
    if cells:
        print("\nper cell (cell numbers count code cells from 0, as nbval's 'Cell N'):")
    for (notebook, number), seen in sorted(cells.items()):
        names = [name for name, _ in seen]
        why = ("the cell raised" if "caused an exception" in seen[0][1]
               else "the saved output is stale: re-run make notebooks" if len(names) == len(setups)
               else "round-off: print a bound or fewer digits (README, Lessons)")
        print(f"  {where(notebook)} cell {number}: differs under {', '.join(names)}  ({why})")
        print(short(seen[0][1], 10_000 if full else 25))
    for r in runs:
        if r.error:
            print(f"  {where(r.notebook)} under {r.setup.name}: {r.error}")
    return failing


def choose_setups(names: list) -> tuple:
    """(setups to run, lines saying which were skipped), or raise SystemExit(2) on a bad name."""
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        print(f"unknown setup {', '.join(unknown)}: expected one of {', '.join(BY_NAME)}",
              file=sys.stderr)
        raise SystemExit(2)
    wanted = [BY_NAME[n] for n in dict.fromkeys(names)] or [s for s in SETUPS if s.default]
    machine = probe()
    missing = [f"{s.name}: {why_not(s, machine)}" for s in wanted if why_not(s, machine)]
    if names and missing:
        print("this machine cannot run the setup asked for: " + "; ".join(missing), file=sys.stderr)
        raise SystemExit(2)
    return [s for s in wanted if not why_not(s, machine)], missing


def find_notebooks(paths: list, assignments: bool) -> list:
    if not paths:
        paths = sorted(REPO.glob(LESSONS)) + (sorted(REPO.glob(ASSIGNMENTS)) if assignments else [])
    bad = [str(p) for p in paths if Path(p).suffix != ".ipynb" or not Path(p).is_file()]
    if bad:
        print("not a notebook file: " + ", ".join(bad), file=sys.stderr)
        raise SystemExit(2)
    return [Path(p).resolve() for p in paths]


def list_setups() -> int:
    machine = probe()
    print(f"this machine: ATen up to {machine[0]}, MKL {'used' if machine[1] else 'not used'}")
    for setup in SETUPS:
        why = why_not(setup, machine)
        when = "default" if setup.default else "on request"
        state = f"cannot run here ({why})" if why else "runs here"
        print(f"{setup.name:<15} {setup.describe():<62} {when:<10} {state}")
    return 0


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="exit status: 0 all outputs matched, 1 a cell differed or a run failed, 2 bad arguments")
    parser.add_argument("notebooks", nargs="*", type=Path,
                        help=f"notebooks to check (default: {LESSONS})")
    parser.add_argument("-c", "--config", action="append", default=[], metavar="SETUP",
                        help="a setup to run, repeatable (default: every default setup this CPU "
                             "runs; --list names them)")
    parser.add_argument("--assignments", action="store_true",
                        help=f"with no notebooks named, also check {ASSIGNMENTS}")
    parser.add_argument("--list", action="store_true",
                        help="print the setups and whether this machine runs each, then exit")
    parser.add_argument("-j", "--jobs", type=int, default=len(os.sched_getaffinity(0)),
                        help="nbval runs at a time (default: this machine's CPU cores)")
    parser.add_argument("--timeout", type=int, default=1800,
                        help="seconds one notebook's run may take (default 1800)")
    parser.add_argument("--full", action="store_true", help="print nbval's whole message per cell")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.list:
        return list_setups()
    try:
        notebooks = find_notebooks(args.notebooks, args.assignments)
        setups, skipped = choose_setups(args.config)
    except SystemExit as exit_:
        return exit_.code
    for line in skipped:
        print(f"skipped  {line}")
    runs = [Run(s, nb) for s in setups for nb in notebooks]
    print(f"checking {len(notebooks)} notebooks under {len(setups)} setups "
          f"({', '.join(s.name for s in setups)}), {args.jobs} at a time", flush=True)
    start = time.perf_counter()
    # Longest notebooks first would balance better, but their order is unknown: keep it simple.
    # One run of a notebook at a time: a lesson writes its own files (lesson 8: runs/lesson08/),
    # which a second run of it under another setup would overwrite midway.
    busy = {nb: threading.Lock() for nb in notebooks}

    def one(run: Run) -> Run:
        with busy[run.notebook]:
            return check(run, args.timeout)

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for run in pool.map(one, runs):
            state = ("ok" if not (run.differed or run.error)
                     else f"cells {sorted(run.differed)} differ" if run.differed else "FAILED")
            print(f"  {run.setup.name:<15} {run.notebook.name:<45} {run.seconds:5.0f} s  {state}",
                  flush=True)
    failing = report(runs, setups, args.full)
    print(f"\n{'FAILED' if failing else 'passed'}: {len(runs) - failing} of {len(runs)} runs matched "
          f"the saved outputs, in {time.perf_counter() - start:.0f} s")
    return 1 if failing else 0


if __name__ == "__main__":
    sys.exit(main())
