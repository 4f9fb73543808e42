"""The code is clean under ruff's small rule set (``[tool.ruff]`` in pyproject.toml: pyflakes,
bugbear, import order): an unused import, an undefined name, a mutable default argument or an
unsorted import block fails here, with ruff's own report as the message."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECKED = ["course_lib", "grader", "tools", "tests", "benchmarks", "site"]


def _ruff() -> list:
    """The command that runs ruff: the one installed beside this Python, else on PATH."""
    beside = Path(sys.executable).with_name("ruff")
    if beside.is_file():
        return [str(beside)]
    if shutil.which("ruff"):
        return [shutil.which("ruff")]
    pytest.skip("ruff is not installed (pip install -e '.[dev]')")


def _check(*paths, cwd=ROOT):
    return subprocess.run([*_ruff(), "check", "--no-cache", "--output-format", "concise", *paths],
                          cwd=cwd, capture_output=True, text=True)


def test_the_repository_is_clean_under_ruff():
    result = _check(*[p for p in CHECKED if (ROOT / p).exists()])
    assert result.returncode == 0, f"ruff found problems (fix them, or `ruff check --fix`):\n{result.stdout}{result.stderr}"


def test_the_rule_set_catches_what_it_is_for(tmp_path):
    """The configuration is the repository's: each kind of finding it exists for is reported."""
    (tmp_path / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    (tmp_path / "bad.py").write_text(
        "import sys\nimport os\n\n\ndef f(x=[]):\n    return undefined_name\n")
    result = _check("bad.py", cwd=tmp_path)
    assert result.returncode == 1
    for code in ("F401", "F821", "B006", "I001"):  # unused import, undefined name, mutable default, order
        assert f" {code} " in result.stdout, (code, result.stdout)


def test_no_test_reads_files_outside_the_repository():
    """What lies beside a checkout (``../shared``: a machine's data) is for benchmarks only: a test
    that read it would pass on one machine and skip or fail on another."""
    outside = re.compile(r"parents\[[2-9]\]|\.\./shared|/ ?[\"']shared[\"']")
    found = [f"{path.name}:{number}: {line.strip()}"
             for path in sorted((ROOT / "tests").glob("*.py")) if path.name != Path(__file__).name
             for number, line in enumerate(path.read_text().splitlines(), 1) if outside.search(line)]
    assert not found, "tests that reach outside the repository:\n" + "\n".join(found)
