"""The ``course_lib`` a sandbox mounts: a copy in which every solution the assignment asks the
student to write (the source notebook's ``metadata.grading.withheld``, e.g.
``course_lib.functions.Linear_Layer``) is a stub whose every function raises, so its code is
not in the sandbox at all: not for ``import``, not for ``importlib.util.spec_from_file_location``
or ``open`` of the file, not in a cached ``.pyc`` (``__pycache__`` is not copied).

A class keeps its name and bases, and each of its methods the same name with a body that raises;
a function keeps its name. The rest of the file, and the rest of the package, is unchanged, so
modules that import the solution still import.
"""

import ast
import shutil
from pathlib import Path


def message(name: str, assignment: str) -> str:
    return f"{name} is course_lib's solution, withheld while {assignment} is graded: use your own implementation"


def stub_source(node, source: str, text: str) -> str:
    """The stub of one top-level ``def`` or ``class`` (``node`` of ``source``)."""
    body = f"raise NotImplementedError({text!r})"
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return f"def {node.name}(*args, **kwargs):\n    {body}\n"
    bases = ", ".join(ast.get_source_segment(source, b) for b in node.bases + node.keywords)
    methods = [m.name for m in node.body if isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef))]
    lines = [f"class {node.name}({bases}):", f"    __doc__ = {text!r}"]
    for name in methods:
        lines += ["", "    @staticmethod", f"    def {name}(*args, **kwargs):", f"        {body}"]
    return "\n".join(lines) + "\n"


def stub_names(path: Path, names: dict) -> list:
    """Replace the top-level definitions ``names`` (``{name: message}``) in the file ``path``;
    returns the names it did not find."""
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines(keepends=True)
    found = [node for node in ast.parse(source).body
             if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name in names]
    for node in sorted(found, key=lambda n: -n.lineno):  # from the end: line numbers stay valid
        start = min([node.lineno] + [d.lineno for d in node.decorator_list]) - 1
        lines[start:node.end_lineno] = [stub_source(node, source, names[node.name])]
    path.write_text("".join(lines), encoding="utf-8")
    return sorted(set(names) - {node.name for node in found})


def stubbed_copy(package: Path, dest: Path, withheld: list, assignment: str) -> list:
    """Copy ``package`` (``course_lib``) to ``dest`` with the ``withheld`` objects stubbed;
    returns the withheld names it could not find (the harness still withholds them by name)."""
    shutil.copytree(package, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    by_file, missing = {}, []
    for qualified in withheld:
        module, name = qualified.rsplit(".", 1)
        parts = module.split(".")
        if parts[0] != package.name:
            missing.append(qualified)
            continue
        relative = Path(*parts[1:])
        path = next((p for p in (dest / relative.with_suffix(".py"), dest / relative / "__init__.py")
                     if p.is_file()), None)
        if path is None:
            missing.append(qualified)
            continue
        by_file.setdefault(path, {})[name] = message(qualified, assignment)
    for path, names in by_file.items():
        missing += [f"{path.stem}.{name}" for name in stub_names(path, names)]
    return missing
