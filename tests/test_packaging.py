"""The two ways to install (pip and conda) must ask for the same packages at the same pins."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _requirements(lines):
    """{name: pin} from requirement strings such as 'torch==2.14.1'."""
    reqs = {}
    for line in lines:
        m = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)\s*(==\s*[^\s;#]+)?\s*", line)
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
