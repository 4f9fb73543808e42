"""``benchmarks/gpu_suite.sh`` on a machine without CUDA: it says so, measures nothing, fails."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_suite.sh"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_without_cuda_it_says_so_and_writes_the_reason_to_the_results_folder(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path / "out")}
    done = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 3
    assert "no CUDA device is available here" in done.stderr and "--dry-run" in done.stderr
    summary = (tmp_path / "out" / "summary.md").read_text()  # $OUT is the default folder
    assert "nothing measured" in summary
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["summary.md"]


def test_dry_run_starts_every_step_the_triton_section_included(tmp_path):
    """The dry run with a stand-in interpreter that records its arguments: the suite calls each
    step's script in its CPU mode, triton_bench.py --dry-run among them, and lists it."""
    log = tmp_path / "calls.txt"
    fake = tmp_path / "python"
    fake.write_text(f'#!/usr/bin/env bash\necho "$*" >> "{log}"\n')
    fake.chmod(0o755)
    env = {**os.environ, "PYTHON": str(fake)}
    done = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "out"), "--dry-run"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "benchmarks/triton_bench.py --dry-run" in log.read_text().splitlines()
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "| 06_triton | 0 |" in summary and "dry run on the CPU" in summary


@pytest.mark.slow
def test_triton_bench_dry_run_builds_and_checks_every_kernel_on_the_cpu():
    pytest.importorskip("triton")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # the script sets it
    done = subprocess.run([sys.executable, str(SCRIPT.parent / "triton_bench.py"), "--dry-run"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "every kernel built, launched and agreed with F.linear" in out
    for case in ("forward + ReLU, B = 7", "forward + backward, B = 7", "forward 32 x 32, float16, B = 32"):
        assert f"| {case} |" in out, case
    assert "target: forward within 1.3x of cuBLAS" in out and "target: fused bias + ReLU" in out
