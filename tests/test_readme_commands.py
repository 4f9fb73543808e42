"""The README's "without make" table: every make target has a plain command, and each one runs.

A student without ``make`` (on Windows, say) copies these commands. Each ``python ...`` command
the table names is run here with ``--help``: its script or module must exist and answer with a
usage text, so a renamed script or a removed subcommand fails this test, not the student.
"""

import functools
import re
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Without make"
ROW = re.compile(r"^\|\s*`make ([\w-]+)`\s*\|(.*)\|\s*$")
COMMAND = re.compile(r"`((?:[A-Z_]+=\S+ )*python [^`]+)`")  # optionally after VAR=value


def plain_commands(readme: str) -> dict:
    """{make target: [plain command, ...]} from the README's table."""
    assert SECTION in readme, f"README.md has no {SECTION!r} section"
    section = readme.split(SECTION, 1)[1].split("\n## ", 1)[0]
    table = {}
    for line in section.splitlines():
        match = ROW.match(line)
        if match:
            table[match.group(1)] = COMMAND.findall(match.group(2))
    return table


def make_targets(makefile: str) -> set:
    """The targets a user can name: those declared .PHONY."""
    phony = re.findall(r"^\.PHONY:(.*)$", makefile.replace("\\\n", " "), re.MULTILINE)
    return {target for line in phony for target in line.split()}


def as_help_call(command: str) -> list:
    """``command`` as argv, run by this Python, with ``--help`` appended."""
    argv = shlex.split(command)
    argv = [word for word in argv if not re.fullmatch(r"[A-Z_]+=\S*", word)]  # env assignments
    assert argv[0] == "python", command
    return [sys.executable] + argv[1:] + ["--help"]


def target_of(path: str) -> Path | None:
    """The file a ``python path/to/script.py`` command runs (None for ``python -m``)."""
    return ROOT / path if path.endswith(".py") else None


@functools.cache
def readme_table() -> dict:
    return plain_commands((ROOT / "README.md").read_text())


def readme_commands() -> list:
    return sorted({c for commands in readme_table().values() for c in commands})


def test_every_make_target_has_a_row_in_the_readme_table():
    missing = sorted(make_targets((ROOT / "Makefile").read_text()) - set(readme_table()))
    assert not missing, f"make targets without a plain command in README's {SECTION!r}: {missing}"
    unknown = sorted(set(readme_table()) - make_targets((ROOT / "Makefile").read_text()))
    assert not unknown, f"README names make targets the Makefile does not have: {unknown}"


def test_each_python_target_of_make_has_its_plain_command():
    # A row without a command is only right for targets that run no Python (help, clean).
    empty = sorted(t for t, commands in readme_table().items() if not commands)
    assert set(empty) <= {"help", "clean"}, f"rows without a python command: {empty}"


def test_scripts_named_by_the_commands_exist():
    scripts = [target_of(as_help_call(c)[1]) for c in readme_commands()]
    missing = [str(s.relative_to(ROOT)) for s in scripts if s is not None and not s.is_file()]
    assert not missing, f"README names scripts that do not exist: {missing}"


@pytest.mark.slow
def test_every_plain_command_answers_help():
    def run(command):
        result = subprocess.run(as_help_call(command), cwd=ROOT, capture_output=True, text=True,
                                timeout=120)
        return command, result

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(run, readme_commands()))
    failed = [f"{command}: exit {r.returncode}\n{r.stderr[-500:]}" for command, r in results
              if r.returncode != 0 or "usage" not in (r.stdout + r.stderr).lower()]
    assert not failed, "\n\n".join(failed)
    assert len(results) >= 8  # the table was read: train, test, lab, notebooks, bench, ...


def test_the_table_parser_reads_rows_and_commands():
    readme = ("intro\n## Without make\n\n| make | plain |\n|---|---|\n"
              "| `make train` | `python -m course_lib train` |\n"
              "| `make bench` | `python a.py` then `X=1 python b.py` |\n"
              "| `make clean` | delete build/ |\n"
              "\n## Next\n| `make other` | `python c.py` |\n")
    assert plain_commands(readme) == {"train": ["python -m course_lib train"],
                                      "bench": ["python a.py", "X=1 python b.py"], "clean": []}
    assert as_help_call("COURSE_FAST=1 python -m pytest -x") == [sys.executable, "-m", "pytest",
                                                                 "-x", "--help"]
