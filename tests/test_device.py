"""``--device auto``: CUDA, then Apple's MPS, then the CPU (course_lib.device.resolve_device).

MPS is simulated here (torch.backends.mps.is_available patched): these tests have not run on a Mac.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from course_lib import cli
from course_lib.device import resolve_device

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def available(monkeypatch):
    """Pretend that CUDA and MPS are available or not: ``available(cuda=..., mps=...)``."""
    def set_available(cuda: bool, mps: bool):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    return set_available


@pytest.mark.parametrize("cuda, mps, expected", [
    (True, True, "cuda"),    # CUDA first, even where MPS exists too
    (True, False, "cuda"),
    (False, True, "mps"),    # a Mac with Apple silicon
    (False, False, "cpu"),
])
def test_auto_picks_cuda_then_mps_then_the_cpu(available, cuda, mps, expected):
    available(cuda=cuda, mps=mps)
    assert resolve_device("auto") == torch.device(expected)


def test_mps_asked_for_by_name_works_where_it_exists(available):
    available(cuda=False, mps=True)
    assert resolve_device("mps") == torch.device("mps")


def test_mps_asked_for_where_there_is_none_says_what_to_use(available):
    available(cuda=True, mps=False)
    expected = r"'mps' was asked for.*is_available\(\) is False.*'cpu' or 'auto'"
    with pytest.raises(ValueError, match=expected):
        resolve_device("mps")


def test_an_unknown_device_lists_the_choices(available):
    available(cuda=False, mps=False)
    expected = "unknown device 'metal': use auto, cpu, cuda, cuda:N or mps"
    with pytest.raises(ValueError, match=expected):
        resolve_device("metal")


def test_the_cli_documents_the_order(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    assert "auto (CUDA, then Apple's MPS, then the CPU)" in " ".join(capsys.readouterr().out.split())


def test_a_lessons_first_cell_does_not_load_the_training_stack():
    """``course_lib.device`` alone: no train, datasets or config, no pandas or torchvision."""
    code = ("import sys\nfrom course_lib.device import resolve_device\nresolve_device('cpu')\n"
            "print(sorted(m for m in ('course_lib.train', 'course_lib.datasets', 'course_lib.config', "
            "'course_lib.runlog', 'pandas', 'torchvision') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_train_still_offers_resolve_device_for_older_code():
    from course_lib import device, train

    assert train.resolve_device is device.resolve_device
