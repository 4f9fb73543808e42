"""Grade one student's notebook: answers in the sandbox, tests in this (trusted) process.

The program the sandbox runs is the assignment's setup cells (the instructor's code, from the
gradebook) followed by the student's answer cells (the cells whose ``grade_id`` is a solution in
the gradebook); try-out cells and the student's copies of test cells never run. The test cells (the
instructor's, hidden tests included, from the gradebook) run here, in a namespace holding the setup
code and proxies for what the answer cells defined: everything the student's code computes comes
back as plain values and is checked by code the student cannot reach.

Everything that goes wrong gets a short problem line naming the cell and the limit, and the
other answers are still graded: a cell that ran too long, ended the process or printed too much is
left out and the process started again without it.

The test cells see the builtins and the setup cells' names as the instructor wrote them: a name
of the student's that would shadow one (``len``, a check) is reported and not used. The feedback
notebook (what the student gets) shows each hidden test's name, points and message, not its code.
"""

import ast
import builtins
import collections
import contextlib
import io
import linecache
import re
import tempfile
import time
import traceback
import types
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from grader.course import nbgrader_meta
from grader.proxies import callable_proxy, function_proxy
from grader.sandbox import (
    WALL_FACTOR,
    Budget,
    Limits,
    Sandbox,
    SandboxUnavailable,
    StudentProcessEnded,
    read_output,
)
from grader.text import first_line

# What an honest answer never needs; each hit is shown to the instructor, not scored.
SUSPICIOUS = {
    "get_ipython": r"\bget_ipython\b", "input_transformers": r"input_transformers",
    "showtraceback": r"showtraceback", "events.register": r"events\s*\.\s*register",
    "assigns to torch.*": r"(?<![\w.])(torch|nn|F)(\.\w+)+\s*=(?!=)|setattr\(\s*(torch|nn|F)\b",
    "assigns to course_lib.*": r"(?<![\w.])(course_lib|checks|Report)(\.\w+)+\s*=(?!=)"
                               r"|setattr\(\s*(course_lib|checks|Report)\b",
    "exec/eval": r"(?<![\w.])(exec|eval|compile)\s*\(", "open(": r"(?<![\w.])open\s*\(|\.read_(text|bytes)\s*\(",
    "gradebook": r"gradebook", "source/": r"source/|\.\./", "imports importlib/ctypes/subprocess":
        r"\b(import|from)\s+(importlib|ctypes|subprocess|socket)\b|__import__", "sys.modules": r"sys\s*\.\s*modules",
    "loads code from a file or bytes": r"spec_from_file_location|module_from_spec|exec_module|SourceFileLoader"
                                       r"|\b(pickle|marshal|dill|cloudpickle|_pickle)\s*\.\s*(loads?|Unpickler)\b"
                                       r"|\b(import|from)\s+(pickle|marshal|dill|cloudpickle)\b|__reduce",
    "reaches autograd's engine": r"_execution_engine|_ImperativeEngine|_engine_run_backward|_functorch",
    "os._exit": r"os\s*\.\s*_exit", "monkey-patches builtins": r"\bbuiltins\b|__builtins__",
    "digs for objects": r"__subclasses__|\bgc\s*\.\s*get_|\brunpy\b|\breload\s*\(",
}


@dataclass
class Job:
    """Everything a worker needs to grade one notebook (picklable: workers run in other processes)."""

    student: str
    assignment: str
    notebook: str  # the notebook's name, without .ipynb
    nb: dict  # the student's notebook: the grader's own copy, read without following links
    cells: dict  # {grade_id: {"kind": "setup" | "answer" | "test", "source": str, "points": float}}
    withheld: list  # course_lib objects left out of the sandbox (e.g. "course_lib.train.train_epoch")
    limits: Limits
    sandboxed: bool
    repo: Path  # the folder holding the course_lib the sandbox gets a copy of
    autograd: bool = True  # False: autograd raises in the sandbox
    forked: bool = True  # the student's process forked from a fork server that has imported torch (sandbox.ForkServer)


@dataclass
class Outcome:
    """One graded notebook: a score per test, the problems and flags for the table, the feedback."""

    scores: dict = field(default_factory=dict)  # {test grade_id: points earned}
    failures: dict = field(default_factory=dict)  # {test grade_id: error text}
    problems: list = field(default_factory=list)
    flags: list = field(default_factory=list)
    restored: list = field(default_factory=list)  # test cells the student deleted
    notes: list = field(default_factory=list)  # answer cells that raised, for the details column
    graded_copy: dict = field(default_factory=dict)  # {grade_id: the index of the cell graded}
    feedback: dict = None  # the graded notebook, for autograded/
    seconds: float = 0.0
    refused: str = ""  # why nothing was graded (the sandbox could not be watched)
    tests: list = field(default_factory=list)  # per test: {"name", "score", "max_score", "output", "hidden"}


def suspicious(index: int, source: str) -> list:
    hits = [name for name, pattern in SUSPICIOUS.items() if re.search(pattern, source)]
    return [f"cell {index}: {', '.join(hits)}"] if hits else []


class StudentCode:
    """The student's process for one notebook, started (again) on demand without the cells that
    broke it; ``call`` sends one request within the current budget."""

    def __init__(self, job: Job, program: list, workdir: Path, deadline: float):
        self.job, self.program, self.deadline = job, program, deadline
        self.sandbox = Sandbox(workdir, job.limits, job.sandboxed, job.repo, job.forked)
        self.skipped = {}  # cell index -> why it was left out
        self.cut = {}  # cell index -> why it stopped early (what it defined before still counts)
        self.results = {}  # cell index -> {"error": dict | None, "output": str}
        self.names = {}
        self.test = None  # the grade_id of the test running now
        self.refused = ""  # why the sandbox could no longer be watched, if it could not
        self.stopped = []  # (test, why) each time the student's process was stopped during a test

    def ensure_running(self) -> None:
        while not self.sandbox.running:
            cells = [(i, kind, src) for i, kind, src, _ in self.program if i not in self.skipped]
            self.sandbox.prepare(self.job.withheld, self.job.assignment)
            self.sandbox.start({"cells": cells, "withheld": self.job.withheld, "assignment": self.job.assignment,
                                "autograd": self.job.autograd})
            current = None
            budget = Budget.for_cell(self.job.limits, self.sandbox.notebook_cpu(), self.deadline)
            try:
                while True:
                    doing = ("starting Python" if current is None else f"cell {current}" if current > 0
                             else "the assignment's setup cell")
                    message = self.sandbox.next_message(budget, doing)
                    if message.get("event") == "start" and isinstance(message.get("cell"), int):
                        current = message["cell"]
                        budget = Budget.for_cell(self.job.limits, self.sandbox.notebook_cpu(), self.deadline)
                        self.sandbox.begin()
                    elif message.get("event") == "end" and isinstance(message.get("cell"), int):
                        self._cell_done(message["cell"], message.get("error"))
                        current = None
                        budget = Budget.for_cell(self.job.limits, self.sandbox.notebook_cpu(), self.deadline)
                        self.sandbox.begin()
                    elif message.get("event") == "ready":
                        self.names = dict(message.get("names", {}))
                        return
            except StudentProcessEnded as e:
                if current is None or current in self.skipped:
                    raise
                self.skipped[current] = f"{e}"
                self.results[current] = {"error": None, "output": self._output(current)}

    def _cell_done(self, index: int, error) -> None:
        output = self._output(index)
        if not isinstance(error, (dict, type(None))) or (error and not {"ename", "evalue", "traceback"} <= set(error)):
            error = {"ename": "Error", "evalue": "the cell failed", "traceback": ""}
        if error and error.get("ename") == "OSError" and "File too large" in error.get("evalue", ""):
            self.cut[index] = (f"cell {index} printed more than {self.job.limits.output_bytes / 1e6:g} MB "
                               "(the limit per cell) and was stopped there")
        elif error and (error.get("ename") == "MemoryError" or "can't allocate memory" in str(error.get("evalue"))):
            self.cut[index] = (f"cell {index} ran out of memory ({self.job.limits.memory_bytes / 2**30:g} GB, "
                               "the limit per student) and was stopped there")
        elif error and "No space left on device" in str(error.get("evalue")):
            self.cut[index] = (f"cell {index} filled its {self.job.limits.disk_bytes / 2**20:g} MB of disk "
                               "(the limit per student) and was stopped there")
        elif error and ("Resource temporarily unavailable" in str(error.get("evalue"))
                        or "can't start new thread" in str(error.get("evalue"))):
            self.cut[index] = (f"cell {index} started more than {self.job.limits.processes} processes or threads "
                               "(the limit per student) and was stopped there")
        self.results[index] = {"error": error, "output": output}

    def _output(self, index: int) -> str:
        return read_output(self.sandbox.workdir / "output" / f"cell{index}.txt", self.job.limits.output_bytes)

    def call(self, message: dict, doing: str):
        if self.sandbox.notebook_cpu() >= self.job.limits.notebook_s:
            raise TimeoutError(f"not run: the notebook used up its {self.job.limits.notebook_s:g} s of CPU time")
        if time.monotonic() >= self.deadline:
            raise TimeoutError(f"not run: the notebook ran past its {WALL_FACTOR * self.job.limits.notebook_s:g} s "
                               "of wall-clock time (it slept or waited)")
        if self.refused:
            raise RuntimeError(f"not run: {self.refused}")
        try:  # each call has its own budget
            self.ensure_running()
            reply = self.sandbox.request(message, Budget.for_cell(self.job.limits, self.sandbox.notebook_cpu(), self.deadline, call=True), doing)
        except SandboxUnavailable as e:  # a test may catch this; grade_notebook reads self.refused
            self.refused = str(e)
            raise RuntimeError(f"not run: {e}") from None
        except StudentProcessEnded as e:
            self.stopped.append((self.test, str(e)))
            raise RuntimeError(str(e)) from None
        if reply.get("event") == "raised":
            raise rebuilt_error(reply)
        return reply


def rebuilt_error(reply: dict) -> Exception:
    """The student's exception, as the same built-in type when it is one (else RuntimeError)."""
    import builtins
    cls = getattr(builtins, str(reply.get("ename")), None)
    message = str(reply.get("evalue", ""))
    if isinstance(cls, type) and issubclass(cls, Exception) and cls.__init__ is not OSError.__init__:
        try:
            return cls(message)
        except Exception:  # noqa: BLE001 (an exception type with unusual arguments)
            pass
    return RuntimeError(f"{reply.get('ename')}: {message}")


def grade_notebook(job: Job) -> Outcome:
    """Grade ``job.nb``; never raises for anything inside the student's notebook."""
    start = time.monotonic()
    outcome = Outcome()
    program = pick_cells(job, job.nb, outcome)
    for index, kind, source, _ in program:
        if kind == "answer":
            outcome.flags += suspicious(index, source)
    with tempfile.TemporaryDirectory(prefix="grading-") as workdir:
        code = StudentCode(job, program, Path(workdir), start + WALL_FACTOR * job.limits.notebook_s)
        try:
            try:
                code.ensure_running()
            except StudentProcessEnded as e:
                outcome.problems.append(str(e))
            outcome.problems += [{**code.cut, **code.skipped}[i] for i in sorted({**code.cut, **code.skipped})]
            namespace, shadowing = trusted_namespace(job, code)
            outcome.notes += shadowing
            tests = {gid: run_test(gid, cell, namespace, code) for gid, cell in job.cells.items()
                     if cell["kind"] == "test"}
        except SandboxUnavailable as e:
            code.refused = str(e)
        finally:
            code.sandbox.stop(graceful=True)
    outcome.seconds = time.monotonic() - start
    if code.refused:  # fail closed: no score from a sandbox we could not watch
        outcome.refused, outcome.problems = code.refused, []
        return outcome
    problems, notes = stop_lines(code.stopped, tests)
    outcome.problems += problems
    outcome.notes += notes
    outcome.notes += [f"cell {i} ({gid}) raised {r['error']['ename']}: {first_line(r['error']['evalue'], 300)}"
                      for i, kind, _, gid in program if (r := code.results.get(i)) and r["error"] and i > 0]
    for gid, (_outputs, error) in tests.items():
        cell = job.cells[gid]
        outcome.scores[gid] = 0.0 if error else cell["points"]
        if error:
            outcome.failures[gid] = error
        outcome.tests.append({"name": gid, "score": outcome.scores[gid], "max_score": cell["points"],
                              "output": error or "passed", "hidden": HIDDEN_BEGIN in cell["source"]})
    outcome.feedback = feedback_notebook(job, job.nb, code, tests, outcome)
    return outcome


def stop_lines(stopped: list, tests: dict) -> tuple:
    """``(problems, notes)`` from the ``(test, why)`` of each time the student's process was stopped:
    one line per test and cause, with how often (each stop restarts the process, so a test that
    calls a crashing function in a loop stops it every time); a test that passed all the same
    gets a note in the details, not a problem in the status."""
    problems, notes = [], []
    for (test, why), times in collections.Counter(stopped).items():  # in the order they happened
        again = f" ({times} times; the process was restarted after each)" if times > 1 else ""
        if test in tests and not tests[test][1]:  # its error text is empty: it passed
            notes.append(f"{test} passed, though during it {why}{again}")
        else:
            problems.append(f"{test}: {why}{again}")
    return problems, notes


def pick_cells(job: Job, nb, outcome: Outcome) -> list:
    """The program (setup cells, then answer cells); ``outcome.graded_copy`` gets the index of the
    cell graded for each grade_id: a grade_id the student duplicated is graded in its last copy."""
    seen = {}
    for index, cell in enumerate(nb.cells, start=1):
        gid = nbgrader_meta(cell).get("grade_id")
        if cell.cell_type == "code" and isinstance(gid, str) and gid in job.cells:
            seen.setdefault(gid, []).append(index)
    for gid, indices in seen.items():
        if len(indices) > 1:
            outcome.problems.append(f"cells {', '.join(map(str, indices))} share grade_id {gid}: "
                                    f"graded cell {indices[-1]}")
    graded_copy = outcome.graded_copy = {gid: indices[-1] for gid, indices in seen.items()}
    setup = [(0, "setup", c["source"], gid) for gid, c in job.cells.items() if c["kind"] == "setup"]
    answers = sorted((graded_copy[gid], "answer", nb.cells[graded_copy[gid] - 1].source, gid)
                     for gid, c in job.cells.items() if c["kind"] == "answer" and gid in graded_copy)
    setup = [(-(len(setup) - i), kind, src, gid) for i, (_, kind, src, gid) in enumerate(setup)]
    outcome.restored = [gid for gid, c in job.cells.items() if c["kind"] == "test" and gid not in seen]
    return setup + answers


def trusted_namespace(job: Job, code: StudentCode):
    """The setup cells run here, then a proxy for each name the answer cells defined; returns the
    namespace and a note for each of the student's names that would shadow a builtin or a setup
    name (those are not used: the tests keep the instructor's)."""
    namespace = {"__name__": "__main__", "__builtins__": builtins}
    with contextlib.redirect_stdout(io.StringIO()):
        for cell in job.cells.values():
            if cell["kind"] == "setup":
                exec(compile(cell["source"], "<setup>", "exec"), namespace)
    answers = [(i, src) for i, kind, src, _ in code.program if kind == "answer"]
    shadowing = []
    for name, kind in code.names.items():
        if not isinstance(name, str) or not name.isidentifier():
            continue
        if name in namespace or hasattr(builtins, name):
            what = "a builtin" if hasattr(builtins, name) and name not in namespace else "a name of the setup cell"
            shadowing.append(f"the answers define {name}, {what} the tests use: the tests used the original")
        elif kind != "value":
            namespace[name] = (function_proxy if kind == "function_class" else callable_proxy)(code, name)
            if kind == "callable":
                namespace[name].__wrapped__ = source_stand_in(name, answers)
    return namespace, shadowing


def source_stand_in(name: str, answers: list):
    """A function object whose source, for ``inspect.getsource``, is the student's ``def name``
    (compiled here, never run), so a test can read the code of the proxy's original. When ``name``
    is not simply one undecorated top-level ``def`` (``name = other_function``, a decorator, two
    definitions...), that ``def`` need not be what runs: the source is then every answer cell."""
    index = plain_def(name, answers)
    if index is None:
        text = "\n\n".join(source for _, source in answers)
        source, filename = f"def {name}(*args, **kwargs):\n    return {text!r}\n", f"<answer cells, {name}>"
    else:
        source, filename = dict(answers)[index], f"<answer cell {index}>"
    module = compile(source, filename, "exec")
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    return next(types.FunctionType(c, {}) for c in module.co_consts
                if isinstance(c, types.CodeType) and c.co_name == name)


def plain_def(name: str, answers: list):
    """The answer cell whose undecorated top-level ``def name`` is the only thing in the answers
    that binds or names ``name``; ``None`` when there is no such cell."""
    found, other = [], 0
    for index, source in answers:
        try:
            tree = ast.parse(source)
        except SyntaxError:  # the cell did not run
            continue
        top = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == name
               and not node.decorator_list]
        found += [index] * len(top)
        for node in ast.walk(tree):
            other += (isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == name
                      and node not in top) \
                or (isinstance(node, ast.Name) and node.id == name and not isinstance(node.ctx, ast.Load)) \
                or (isinstance(node, ast.alias) and (node.asname or node.name.split(".")[0]) == name) \
                or (isinstance(node, (ast.Global, ast.Nonlocal)) and name in node.names) \
                or (isinstance(node, ast.Constant) and node.value == name)
    return found[0] if len(found) == 1 and not other else None


def run_test(gid: str, cell: dict, namespace: dict, code: StudentCode):
    """Run one test cell here: ``(notebook outputs, error text or "")``."""
    code.test = gid
    printed = io.StringIO()
    error = ""
    outputs = []
    try:
        with contextlib.redirect_stdout(printed):
            exec(compile(cell["source"], f"<{gid}>", "exec"), namespace)
    except Exception as e:  # noqa: BLE001 (a failed test is a score of 0, not a crash)
        error = f"{type(e).__name__}: {e}"
        tb = traceback.format_exception(e)
        outputs.append(nbformat.v4.new_output("error", ename=type(e).__name__, evalue=str(e),
                                              traceback=[tb[-1].rstrip()]))
    if printed.getvalue():
        outputs.insert(0, nbformat.v4.new_output("stream", name="stdout", text=printed.getvalue()[:20_000]))
    return outputs, error


def feedback_notebook(job: Job, nb, code: StudentCode, tests: dict, outcome: Outcome) -> dict:
    """The student's notebook as graded: the instructor's setup and test cells, each answer with
    what it printed or why it did not run, copies and try-out cells without outputs."""
    nb, graded_copy = nbformat.from_dict(nb), outcome.graded_copy
    for index, cell in enumerate(nb.cells, start=1):
        gid = nbgrader_meta(cell).get("grade_id")
        gid = gid if isinstance(gid, str) else None
        if cell.cell_type != "code":
            continue
        cell.outputs, cell.execution_count = [], None
        if gid in job.cells and graded_copy.get(gid) != index:
            del cell.metadata["nbgrader"]
            cell.outputs = [stream(f"not graded: cell {graded_copy[gid]} has the same grade_id {gid}")]
        elif gid in job.cells and job.cells[gid]["kind"] != "answer":
            cell.source = without_hidden_tests(job.cells[gid])
            cell.outputs = tests.get(gid, ([], ""))[0]
        elif gid in job.cells:
            cell.outputs = answer_outputs(index, code)
    for gid in outcome.restored:
        restored = nbformat.v4.new_code_cell(without_hidden_tests(job.cells[gid]), metadata={"nbgrader": {
            "grade": True, "grade_id": gid, "locked": True, "points": job.cells[gid]["points"],
            "schema_version": 3, "solution": False, "task": False}})
        restored.outputs = tests[gid][0]
        nb.cells.append(restored)
    return nb


def answer_outputs(index: int, code: StudentCode) -> list:
    result = code.results.get(index, {"error": None, "output": ""})
    outputs = [stream(result["output"])] if result["output"] else []
    if index in code.skipped:
        outputs.append(stream(f"[grader] {code.skipped[index]}: left out of grading, "
                              "the other cells ran without it", "stderr"))
    elif result["error"]:
        error = result["error"]
        outputs.append(nbformat.v4.new_output("error", ename=error["ename"], evalue=error["evalue"],
                                              traceback=error["traceback"].splitlines()[-20:]))
    return outputs


HIDDEN_BEGIN, HIDDEN_END = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"


def without_hidden_tests(cell: dict) -> str:
    """A test cell's source as the student may see it: each hidden region replaced by a line
    that says it ran (its result is the cell's output), as in the released notebook."""
    kept, hidden = [], False
    for line in cell["source"].splitlines():
        if HIDDEN_BEGIN in line:
            hidden = True
            kept.append(line[:line.index(HIDDEN_BEGIN)] + f"# hidden tests ({cell['points']:g} points "
                        "for the whole cell) ran here; their result is below, their code is not shown")
        elif HIDDEN_END in line:
            hidden = False
        elif not hidden:
            kept.append(line)
    return "\n".join(kept)


def stream(text: str, name: str = "stdout"):
    return nbformat.v4.new_output("stream", name=name, text=text if text.endswith("\n") else text + "\n")
