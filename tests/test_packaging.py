"""Packaging: the two ways to install (pip and conda) ask for the same packages at the same pins,
and the wheel works outside the checkout."""

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib
import yaml
from synthetic import mnist_data_dir

ROOT = Path(__file__).resolve().parents[1]


def _requirements(lines):
    """{name: pin} from requirement strings such as 'torch==2.14.1'."""
    reqs = {}
    for line in lines:
        m = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)\s*(==\s*[^\s;#]+)?\s*(;.*)?", line)  # ; a marker
        assert m, f"unexpected requirement line: {line!r}"
        reqs[m.group(1).lower().replace("_", "-")] = (m.group(2) or "").replace(" ", "")
    return reqs


def pyproject_requirements():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        lines += extra
    return _requirements(lines)


def environment_requirements():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_lines, conda = [], {}
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            pip_lines += dep.get("pip", [])
        else:
            name, _, version = dep.partition("=")
            conda[name] = version
    return conda, _requirements(pip_lines)


def test_environment_yml_and_pyproject_agree():
    ours = pyproject_requirements()
    conda, theirs = environment_requirements()
    missing = sorted(set(ours) - set(theirs))
    extra = sorted(set(theirs) - set(ours))
    differing = sorted(n for n in set(ours) & set(theirs) if ours[n] != theirs[n])
    assert not missing, f"in pyproject.toml but not environment.yml: {missing}"
    assert not extra, f"in environment.yml but not pyproject.toml: {extra}"
    assert not differing, "pins differ: " + ", ".join(f"{n} {ours[n]} vs {theirs[n]}" for n in differing)
    assert conda.get("python") == "3.11"


def test_every_dependency_is_pinned_and_torch_pins_are_the_courses():
    reqs = pyproject_requirements()
    unpinned = sorted(n for n, pin in reqs.items() if not pin.startswith("=="))
    assert not unpinned, f"unpinned: {unpinned}"
    assert reqs["torch"] == "==2.14.1" and reqs["torchvision"] == "==0.29.1"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    quick_start = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"^\s*(make \w+)\s*$", quick_start, flags=re.M)
    assert commands == ["make train", "make test"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test\b", ci, flags=re.M)


# --- The package outside the checkout ----------------------------------------------------------

OUTSIDE = r"""
import importlib, json, pathlib, pkgutil, sys
import course_lib
from course_lib import checks

site = pathlib.Path(sys.argv[1]).resolve()
assert pathlib.Path(course_lib.__file__).resolve().is_relative_to(site), course_lib.__file__
modules = sorted(i.name for i in pkgutil.walk_packages(course_lib.__path__, prefix="course_lib."))
for name in modules:
    if name != "course_lib.__main__":  # that one runs the command line (python -m course_lib, below)
        importlib.import_module(name)

def count(sizes):  # lesson 1's exercise, answered
    return sum(a * b + b for a, b in zip(sizes, sizes[1:]))

report = checks.exercise(checks.check_parameter_count, count, solution=None)
from course_lib.paths import repo_root, resolve_data_dir, resolve_out_dir
print(json.dumps({"modules": modules, "check": str(report), "passed": bool(report),
                  "repo_root": repo_root(), "data": str(resolve_data_dir()), "runs": str(resolve_out_dir())}))
"""


def _source_tree(destination: Path) -> Path:
    """The files a wheel is built from, copied out of the checkout (which stays untouched)."""
    shutil.copytree(ROOT / "course_lib", destination / "course_lib",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, destination / name)
    return destination


@pytest.mark.slow
def test_the_wheel_works_outside_the_checkout(tmp_path):
    """Built, installed into a fresh folder and run from another one, with HOME somewhere new:
    every module imports, a lesson's exercise check runs, and training reads its data from and
    writes its runs to the per-user folders."""
    python = sys.executable
    source = _source_tree(tmp_path / "source")
    subprocess.run([python, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                    "--wheel-dir", str(tmp_path / "dist"), str(source)], check=True, timeout=300)
    [wheel] = (tmp_path / "dist").glob("course_lib-*.whl")
    packaged = {n for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".py")}
    in_source = {str(p.relative_to(source)) for p in (source / "course_lib").rglob("*.py")}
    assert packaged == in_source, f"not in the wheel: {sorted(in_source - packaged)}"

    site, home, work = tmp_path / "site", tmp_path / "home", tmp_path / "work"
    subprocess.run([python, "-m", "pip", "install", "--no-deps", "--quiet", "--target", str(site),
                    str(wheel)], check=True, timeout=300)
    work.mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in ("COURSE_DATA_DIR", "COURSE_RUNS_DIR", "XDG_CACHE_HOME", "PYTHONPATH")}
    env.update(HOME=str(home), PYTHONPATH=str(site), MPLBACKEND="Agg")

    def run(*args):
        done = subprocess.run([python, *args], cwd=work, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    found = json.loads(run("-c", OUTSIDE, str(site)).splitlines()[-1])
    modules = sorted(str(Path(p).with_suffix("")).replace("/", ".") for p in in_source
                     if not p.endswith(("__init__.py", "__main__.py")))
    assert set(modules) <= set(found["modules"])
    assert found["passed"] and "check_parameter_count: all correct" in found["check"]
    assert found["repo_root"] is None
    user = home / ".cache" / "course_lib"
    assert (found["data"], found["runs"]) == (str(user / "data"), str(user / "runs"))

    mnist_data_dir(user / "data", 300, 100)  # offline: "mnist" is read from the per-user folder
    printed = run("-m", "course_lib", "train", "--dataset", "mnist", "--epochs", "1", "--max-batches",
                  "2", "--batch-size", "32", "--num-units", "16", "--device", "cpu", "--quiet")
    assert "test accuracy:" in printed
    [record] = [json.loads(line) for line in (user / "runs" / "runs.jsonl").read_text().splitlines()]
    assert record["status"] == "completed" and record["resolved_dataset"] == "mnist"
    assert (user / "runs" / record["checkpoint"]).is_file()
    assert sorted(p.name for p in work.iterdir()) == []  # nothing written in the working directory
