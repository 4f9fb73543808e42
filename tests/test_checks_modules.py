"""Tests of course_lib/checks/modules.py: lesson 10's MLP and RMSNorm modules."""

import torch
from torch import nn

from course_lib.checks import check_mlp, check_rms_norm
from course_lib.layers import Linear, ScaledReLU


def test_mlp_check():
    def right(sizes):
        layers = [Linear(sizes[0], sizes[1])]
        for a, b in zip(sizes[1:], sizes[2:]):
            layers += [ScaledReLU(0.5), Linear(a, b)]
        return nn.Sequential(*layers)

    assert check_mlp(right).passed

    def torch_layers(sizes):
        return nn.Sequential(*[nn.Linear(a, b) for a, b in zip(sizes, sizes[1:])])

    report = check_mlp(torch_layers)
    assert "sizes 6-5-4-2" in report.failed_names() and "not nn.Linear" in str(report)

    def trailing_activation(sizes):
        return nn.Sequential(*right(sizes), ScaledReLU(0.5))

    report = check_mlp(trailing_activation)
    assert report.failed_names() == ["sizes 6-5-4-2", "sizes 3-1"]
    assert "returned list" in str(check_mlp(lambda s: [Linear(3, 1)]))


class RMSNorm(torch.nn.Module):
    def __init__(self, features):
        super().__init__()
        self.gain = torch.nn.Parameter(torch.ones(features))

    def forward(self, x):
        return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * self.gain


def test_rms_norm():
    assert check_rms_norm(RMSNorm).passed

    class PlainTensor(RMSNorm):
        def __init__(self, features):
            torch.nn.Module.__init__(self)
            self.gain = torch.ones(features)  # not registered

    assert "register one nn.Parameter" in str(check_rms_norm(PlainTensor))

    class WholeTensorMean(RMSNorm):
        def forward(self, x):
            return x / torch.sqrt(x.pow(2).mean() + 1e-6) * self.gain

    report = check_rms_norm(WholeTensorMean)
    assert report.failed_names() == ["output (3-D input)"] and "last dimension" in str(report)

    class Detached(RMSNorm):
        def forward(self, x):
            return super().forward(x).detach() * 1

    assert check_rms_norm(Detached).failed_names() == ["gradient reaches gain"]
