"""Test-only helper: import Triton in the mode these tests need, before anything else does.

Triton reads TRITON_INTERPRET when it is imported. course_lib imports Triton only at a kernel's
first launch, so at collection time nothing has imported it yet: without CUDA this module imports
it with the variable set (the CPU interpreter), then unsets it again, and ``interpreter`` (a
fixture for the Triton tests) sets it for each of those tests only. With CUDA the kernels are
compiled for the GPU and nothing is set. Skips the importing test module where Triton is missing.
"""

import os
import sys

import pytest
import torch

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"

if not CUDA and "triton" not in sys.modules:
    os.environ["TRITON_INTERPRET"] = "1"
    try:
        pytest.importorskip("triton.language")
    finally:
        del os.environ["TRITON_INTERPRET"]
pytest.importorskip("triton")


@pytest.fixture(autouse=True)
def interpreter(monkeypatch):
    """TRITON_INTERPRET=1 for one test, without CUDA (import it into the test module)."""
    from course_lib.triton_linear import load_triton

    if not CUDA:
        monkeypatch.setenv("TRITON_INTERPRET", "1")
        load_triton()  # fails with its reason if Triton was imported in the other mode
