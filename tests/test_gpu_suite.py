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
