"""Choosing the device once: ``resolve_device("auto")`` is CUDA, then Apple's MPS, then the CPU.

A lesson's first cell imports this module alone (not the training stack), picks ``DEVICE`` and
passes it on; ``course_lib.train.fit`` and the command line's ``--device`` go through it too.
"""

import torch


def resolve_device(device="auto") -> torch.device:
    """``auto`` is CUDA when available, then Apple's MPS, else the CPU; asking for a device that
    is not available is an error."""
    if str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if torch.backends.mps.is_available() else "cpu")
    try:
        device = torch.device(device)
    except RuntimeError:
        raise ValueError(f"unknown device {device!r}: use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for, but torch.cuda.is_available() is False; "
                         "use device 'cpu' or 'auto'")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device 'mps' was asked for, but torch.backends.mps.is_available() is "
                         "False (MPS needs a Mac with Apple silicon); use device 'cpu' or 'auto'")
    return device
