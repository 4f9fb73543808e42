"""Test-only data: a small, learnable MNIST-shaped dataset, and a data folder holding it."""

from pathlib import Path

import torch

from course_lib.datasets import RawData, write_raw


def synthetic(n_train: int = 600, n_test: int = 200, seed: int = 0) -> RawData:
    """Each class is a random pattern of 4x4-pixel blocks (so a shift by a pixel keeps it
    recognisable) plus noise: learnable in a few epochs, and no real data needed."""
    g = torch.Generator().manual_seed(seed)
    patterns = (torch.rand(10, 7, 7, generator=g) * 160).repeat_interleave(4, 1).repeat_interleave(4, 2)

    def draw(n):
        labels = torch.arange(n) % 10
        noise = torch.rand(n, 28, 28, generator=g) * 96
        return (patterns[labels] + noise).round().to(torch.uint8), labels

    return RawData("synthetic", *draw(n_train), *draw(n_test))


def mnist_data_dir(root, n_train: int = 600, n_test: int = 200) -> Path:
    """``root`` made a data folder whose "MNIST" is ``synthetic(n_train, n_test)`` in torchvision's
    layout (``root/MNIST/raw``); returns ``root``."""
    write_raw(synthetic(n_train, n_test), Path(root) / "MNIST" / "raw")
    return Path(root)
