"""Re-execute the lesson notebooks from a clean kernel and save them with their outputs.

    python tools/run_notebooks.py                          # every notebooks/*.ipynb
    python tools/run_notebooks.py notebooks/01_forward_pass.ipynb ...

This is what ``make notebooks`` runs, and what the committed outputs come from: ``make test``
re-runs each notebook with nbval and compares its outputs with the saved ones.

Each notebook runs top to bottom in a fresh kernel of *this* Python environment (not whatever
``python3`` kernel a user has registered), with the notebook's own folder as working directory, as
nbval and JupyterLab run it. ``COURSE_FAST=1`` is set, so long lessons (MNIST training, the sweep)
take their fast path. A notebook whose cell raises is reported and left untouched on disk.

The kernel runs under one fixed numeric setup, ``ATEN_CPU_CAPABILITY=default OMP_NUM_THREADS=1``
(no MKL_CBWR), whatever the caller's environment says: the plainest code path, which every CPU
has, so the saved outputs never record one machine's round-off. ``tools/check_portable.py``
(``make portable``) then checks that they hold under the other setups as well.
"""

import argparse
import os
import sys
import time
from pathlib import Path

import ipykernel.kernelspec
import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from course_lib.files import atomic_write

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"
THIS_ENV_KERNEL = "course-lib-this-env"


class ThisEnvKernelSpecs(KernelSpecManager):
    """Resolve ``THIS_ENV_KERNEL`` to an IPython kernel run by ``sys.executable``."""

    def get_kernel_spec(self, kernel_name):
        if kernel_name == THIS_ENV_KERNEL:
            return self.kernel_spec_class(
                resource_dir=ipykernel.kernelspec.RESOURCES, **ipykernel.kernelspec.get_kernel_dict()
            )
        return super().get_kernel_spec(kernel_name)


# The numeric setup outputs are saved under (check_portable.py's "default-1"); the variables in
# NUMERIC_UNSET would pick another BLAS code path or thread count, so they are cleared.
NUMERIC_SETUP = {"ATEN_CPU_CAPABILITY": "default", "OMP_NUM_THREADS": "1"}
NUMERIC_UNSET = ("MKL_NUM_THREADS", "MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS", "MKL_DEBUG_CPU_TYPE")


def kernel_env() -> dict:
    """The kernel's environment: ours, in fast mode and the fixed numeric setup, with matplotlib
    left to draw inline."""
    env = {k: v for k, v in os.environ.items() if k not in NUMERIC_UNSET}
    env.update(NUMERIC_SETUP, COURSE_FAST="1")
    # A non-inline MPLBACKEND (e.g. Agg in CI) would silently drop every figure from the outputs.
    env.pop("MPLBACKEND", None)
    return env


def merge_streams(nb) -> None:
    """Join consecutive pieces of the same stream in each cell.

    How a kernel splits a cell's printing into pieces depends on timing; merged, a re-run that
    prints the same text saves the same file (nbval merges them the same way before comparing).
    """
    for cell in nb.cells:
        merged = []
        for output in cell.get("outputs", []):
            previous = merged[-1] if merged else None
            if (output.output_type == "stream" and previous is not None
                    and previous.output_type == "stream" and previous.name == output.name):
                previous.text += output.text
            else:
                merged.append(output)
        if "outputs" in cell:
            cell.outputs = merged


def execute(path: Path, timeout: int) -> float:
    """Run one notebook in place; return its wall time in seconds."""
    nb = nbformat.read(path, as_version=4)
    km = KernelManager(kernel_name=THIS_ENV_KERNEL, kernel_spec_manager=ThisEnvKernelSpecs())
    client = NotebookClient(
        nb,
        km=km,
        timeout=timeout,
        record_timing=False,  # no per-cell timestamps: a re-run changes only what really changed
        resources={"metadata": {"path": str(path.parent)}},
    )
    start = time.perf_counter()
    client.execute(env=kernel_env())
    seconds = time.perf_counter() - start
    merge_streams(nb)
    # Written next to the target, then renamed: an interrupted run never leaves half a notebook.
    text = nbformat.writes(nb)
    atomic_write(path, text if text.endswith("\n") else text + "\n")  # as nbformat.write ends it
    return seconds


def stderr_cells(path: Path) -> list:
    """Indices of code cells that wrote to stderr (warnings the lesson should not show)."""
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    return [i for i, c in enumerate(code)
            if any(o.get("output_type") == "stream" and o.get("name") == "stderr"
                   for o in c.get("outputs", []))]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path,
                        help="notebooks to run (default: every notebooks/*.ipynb)")
    parser.add_argument("--timeout", type=int, default=600,
                        help="seconds one cell may run before the notebook fails (default 600)")
    args = parser.parse_args(argv)

    paths = args.notebooks or sorted(NOTEBOOKS.glob("*.ipynb"))
    if not paths:
        print(f"no notebooks found in {NOTEBOOKS.relative_to(REPO)}/", file=sys.stderr)
        return 1
    missing = [str(p) for p in paths if p.suffix != ".ipynb" or not p.is_file()]
    if missing:
        print("not a notebook file: " + ", ".join(missing), file=sys.stderr)
        return 2

    failed = []
    for path in paths:
        path = path.resolve()
        name = path.name
        try:
            seconds = execute(path, args.timeout)
        except CellExecutionError as e:
            print(f"FAILED   {name}: a cell raised; the file was left as it was\n{e}", file=sys.stderr)
            failed.append(name)
            continue
        note = ""
        noisy = stderr_cells(path)
        if noisy:
            note = f"  (stderr output in code cells {noisy}: tests/test_notebooks.py will fail)"
        print(f"ran      {name}  {seconds:5.1f} s{note}", flush=True)
    if failed:
        print(f"{len(failed)} notebook(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
