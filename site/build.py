"""Build the course website into build/site/ (what ``make site`` runs).

    python site/build.py              # run every lesson in full mode, then write the site
    python site/build.py --preview    # no lesson is run: the committed (fast-mode) outputs

Then read it with ``python -m http.server -d build/site`` and http://localhost:8000 (or open
build/site/index.html directly: every page works from the file system too).

The lessons are executed now, from a clean kernel each, in full mode (``COURSE_FAST`` unset), so
their pages show what a student sees after a real run: training that learns, HiPlot's interactive
views. The build is offline by design: the kernels get an empty data folder and a closed proxy,
so ``auto`` settles on mnist-5k in seconds, and every machine builds the same site. Each lesson's
runs go where the lesson puts them (the checkout's runs/ folder), as when a student runs it.
"""

import argparse
import os
import pkgutil
import secrets
import shutil
import sys
import time
from pathlib import Path

SITE = Path(__file__).resolve().parent
REPO = SITE.parent
BUILD = REPO / "build"
PAGES = ["index.md", "assignments.md", "benchmarks.md"]  # site/'s own pages
# Repository files the pages include, at the same relative place (their links keep working).
INCLUDED = ["README.md", "assignments/README.md", "benchmarks/RESULTS.md"]
CLOSED_PROXY = "http://127.0.0.1:9"  # port 9 (discard): a download is refused at once
# A random value put in the build's environment and written beside (not into) the site:
# tests/test_site.py fails when a page contains it, i.e. when a page publishes the environment.
CANARY_NAME = "COURSE_SITE_CANARY"
CANARY_FILE = BUILD / "site-canary.txt"
KERNEL_CONFIG = 'c.IPKernelApp.log_level = "ERROR"\n'
API_HEADER = """# API reference: `course_lib`

Every public name of the course's library, from its docstrings. The lessons import these; the
source is in the repository's `course_lib/` folder.
"""


def lessons() -> list:
    """The lesson notebooks in reading order (their number is the order)."""
    return sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def modules() -> list:
    """Every importable module of course_lib, subpackages included, sorted by name."""
    sys.path.insert(0, str(REPO))
    import course_lib

    names = [m.name for m in pkgutil.walk_packages(course_lib.__path__, "course_lib.")
             if not m.name.rsplit(".", 1)[-1].startswith("_")]
    return ["course_lib"] + sorted(names)


def api_page() -> str:
    """MyST source of the API reference: one autodoc section per module."""
    parts = [API_HEADER]
    for name in modules():
        parts.append(f"## `{name}`\n\n```{{eval-rst}}\n.. automodule:: {name}\n```\n")
    return "\n".join(parts)


def link_or_copy(source: Path, target: Path) -> None:
    """A symlink where the system allows one (the lessons then run in notebooks/ itself, and
    print the same relative paths as for a student), else a copy."""
    try:
        target.symlink_to(source, target_is_directory=source.is_dir())
    except OSError:
        (shutil.copytree if source.is_dir() else shutil.copyfile)(source, target)


def assemble(src: Path) -> None:
    """Write Sphinx's source tree: site/'s pages, the lessons, their figures, the API page."""
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)
    for name in PAGES:
        shutil.copyfile(SITE / name, src / name)
    for name in INCLUDED:
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO / name, src / name)
    link_or_copy(REPO / "notebooks", src / "notebooks")
    link_or_copy(REPO / "assets", src / "assets")
    (src / "api.md").write_text(api_page())


def plant_canary() -> str:
    """Put a fresh random value in this build's environment (the kernels and autodoc see it)."""
    value = f"canary-{secrets.token_hex(12)}"
    os.environ[CANARY_NAME] = value
    CANARY_FILE.parent.mkdir(parents=True, exist_ok=True)
    CANARY_FILE.write_text(value + "\n")
    return value


def kernel_environment(preview: bool) -> None:
    """Set the environment the lessons' kernels inherit (see the module docstring)."""
    os.environ["COURSE_SITE_EXECUTE"] = "off" if preview else "force"
    os.environ.pop("COURSE_FAST", None)
    os.environ.pop("MPLBACKEND", None)  # a non-inline backend would drop every figure
    empty = BUILD / "site-data"  # no MNIST here: auto falls back to mnist-5k
    shutil.rmtree(empty, ignore_errors=True)
    empty.mkdir(parents=True)
    os.environ["COURSE_DATA_DIR"] = str(empty)
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        os.environ[name] = CLOSED_PROXY
    for name in ("no_proxy", "NO_PROXY"):
        os.environ.pop(name, None)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    # The kernels read their IPython settings from the build's own folder, not the user's profile:
    # they log errors only, so the build does not print "Kernel is running over TCP without
    # encryption" once per lesson (they talk to this process on 127.0.0.1).
    ipython = BUILD / "site-ipython"
    (ipython / "profile_default").mkdir(parents=True, exist_ok=True)
    (ipython / "profile_default" / "ipython_kernel_config.py").write_text(KERNEL_CONFIG)
    os.environ["IPYTHONDIR"] = str(ipython)
    # The lessons' "python3" kernel is this environment's (ipykernel's, run by this Python), not a
    # kernel of the same name the user registered for another Python: JUPYTER_PATH comes first.
    os.environ["JUPYTER_PATH"] = os.pathsep.join(
        filter(None, [str(Path(sys.prefix) / "share" / "jupyter"), os.environ.get("JUPYTER_PATH")]))


def build(out: Path, preview: bool) -> int:
    from sphinx.cmd.build import build_main

    src, doctrees = BUILD / "site-src", BUILD / "site-doctrees"
    assemble(src)
    kernel_environment(preview)
    plant_canary()
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(doctrees, ignore_errors=True)
    return build_main(["-b", "html", "-c", str(SITE), "-d", str(doctrees), "-q",
                       str(src), str(out)])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[1:]))
    parser.add_argument("--preview", action="store_true",
                        help="do not run the lessons; show their committed fast-mode outputs")
    parser.add_argument("--out", type=Path, default=BUILD / "site",
                        help="output folder (default: build/site)")
    args = parser.parse_args(argv)
    if not lessons():
        print("no lessons found in notebooks/", file=sys.stderr)
        return 1
    start = time.perf_counter()
    status = build(args.out.resolve(), args.preview)
    if status:
        print(f"the site build failed (status {status}); see the messages above", file=sys.stderr)
        return status
    index = args.out / "index.html"
    print(f"site: {index} ({len(lessons())} lessons, {time.perf_counter() - start:.0f} s); "
          f"read it with: python -m http.server -d {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
