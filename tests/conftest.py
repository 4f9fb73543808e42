"""Shared fixtures: the devices to test on (CUDA only where it exists), and no network."""

import importlib.util
import os
import socket
import sys

import pytest
import torch

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device; none here")

DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.cuda, CUDA])]

# Triton reads TRITON_INTERPRET once, when it is first imported. Without CUDA the Triton tests run
# its CPU interpreter, so import it in that mode now, before any test module (torch.compile's
# inductor, say) imports it the other way; tests/triton_interpreter.py then sets the variable
# for each Triton test only.
if not torch.cuda.is_available() and "triton" not in sys.modules and importlib.util.find_spec("triton"):
    os.environ["TRITON_INTERPRET"] = "1"
    try:
        import triton.language  # noqa: F401
    finally:
        del os.environ["TRITON_INTERPRET"]


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from the same random state."""
    torch.manual_seed(0)


@pytest.fixture
def offline(monkeypatch):
    """No network, at the socket level, whatever library tries: every name lookup and connection
    fails at once, as it does without a network. Returns the list of socket default timeouts in
    force at each attempt (empty: nothing tried the network)."""
    attempts = []

    def no_network(*args, **kwargs):
        attempts.append(socket.getdefaulttimeout())
        raise OSError("simulated: no network")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket.socket, "connect_ex", no_network)
    return attempts


@pytest.fixture
def log_dir(tmp_path):
    """A runs folder whose run log is the made-up sweep of ``records.sweep_log``."""
    from records import sweep_log

    return sweep_log(tmp_path / "runs")
