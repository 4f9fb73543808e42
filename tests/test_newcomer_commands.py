"""The first commands a newcomer types print what the README says they print.

``make help`` names every target; the README's sample output of ``make train`` is what the same
command prints offline (mnist-5k, on the CPU: the run is seeded, so the accuracy line is the same
on every machine but for its timing fields).
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CLOSED_PROXY = "http://127.0.0.1:9"


def phony_targets() -> set:
    makefile = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    return {t for line in re.findall(r"^\.PHONY:(.*)$", makefile, re.MULTILINE) for t in line.split()}


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_help_lists_every_target():
    result = subprocess.run(["make", "-s", "help"], cwd=ROOT, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    listed = re.findall(r"^make ([\w-]+) ", result.stdout, re.MULTILINE)
    assert sorted(listed) == sorted(phony_targets()), result.stdout
    assert len(listed) == len(set(listed))


def readme_sample() -> str:
    """The block the README shows after `make train`."""
    quick_start = (ROOT / "README.md").read_text().split("## Quick start", 1)[1]
    match = re.search(r"```\n(test accuracy:.*?)```", quick_start, re.DOTALL)
    assert match, "README's Quick start shows no sample output of `make train`"
    return match.group(1)


def normalised(output: str) -> str:
    """``output`` with what changes from run to run replaced: the run id and the timings."""
    output = re.sub(r"\d{8}-\d{6}-[0-9a-f]{6}", "RUN_ID", output)
    output = re.sub(r"\d+\.\d s, [\d,]+ samples/s", "T s, N samples/s", output)
    return output


def test_the_normalisation_keeps_what_must_match():
    line = "test accuracy: 96.90% on mnist-5k (best epoch 23 of 30, 5.0 s, 61,178 samples/s on cpu)"
    assert normalised(line) == ("test accuracy: 96.90% on mnist-5k (best epoch 23 of 30, "
                                "T s, N samples/s on cpu)")
    assert normalised(line.replace("96.90", "96.70")) != normalised(line)
    assert normalised("runs/20261129-134744-a61de3/best.pt") == "runs/RUN_ID/best.pt"


@pytest.mark.slow
def test_readme_shows_what_make_train_prints(tmp_path):
    """`make train` is `python -m course_lib train`: run it offline, from a folder of its own."""
    env = dict(os.environ, COURSE_DATA_DIR=str(tmp_path / "data"),
               COURSE_RUNS_DIR=str(tmp_path / "runs"), CUDA_VISIBLE_DEVICES="",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        env[name] = CLOSED_PROXY
    result = subprocess.run([sys.executable, "-m", "course_lib", "train", "--device", "cpu"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stderr[-2000:]
    assert normalised(result.stdout) == normalised(readme_sample()), (
        f"README.md shows:\n{readme_sample()}\n`make train` printed:\n{result.stdout}")
