"""The report every check returns, and the helpers the checks share to fill one in.

A ``Report`` is a title and one ``Line`` per item checked; ``compare`` adds the line for a
student's tensor against the expected one (shape, NaN, largest error, all in float64 within
``TOLERANCE``), ``raised`` the line for an exception, worded in course terms. One convention each,
used by every check: ``raised`` for any exception a student's code raised, ``is_stub`` to tell an
answer not written yet, ``as_number`` to read a number a student's code returned.
"""

from dataclasses import dataclass, field

import torch

from .autograd import explain, shape_hint

TOLERANCE = {"rtol": 1e-6, "atol": 1e-8}  # the checks run in float64


@dataclass
class Line:
    name: str
    passed: bool
    detail: str


@dataclass
class Report:
    """The outcome of one check: a title and one line per item checked."""

    title: str
    lines: list = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.lines) and all(line.passed for line in self.lines)

    def __bool__(self) -> bool:
        return self.passed

    def add(self, name: str, passed: bool, detail: str = "") -> None:
        self.lines.append(Line(name, passed, detail))

    def failed_names(self) -> list:
        return [line.name for line in self.lines if not line.passed]

    def __str__(self) -> str:
        n_ok = sum(line.passed for line in self.lines)
        verdict = "all correct" if self.passed else f"{n_ok} of {len(self.lines)} correct"
        width = max((len(line.name) for line in self.lines), default=0)
        rows = [f"{self.title}: {verdict}"]
        for line in self.lines:
            mark = "PASS" if line.passed else "FAIL"
            rows.append(f"  {mark}  {line.name:<{width}}  {line.detail}".rstrip())
        return "\n".join(rows)

    __repr__ = __str__

    def raise_if_failed(self) -> "Report":
        if not self.passed:
            raise AssertionError("\n" + str(self))
        return self


def compare(name: str, got, expected: torch.Tensor, report: Report, hint: str = "") -> bool:
    """Add one line to ``report`` comparing a student's tensor with the expected one."""
    shape = tuple(expected.shape)
    if got is None:
        report.add(name, False, f"returned None, expected a tensor of shape {shape}. {hint}".strip())
        return False
    if not isinstance(got, torch.Tensor):
        report.add(name, False, f"returned {type(got).__name__}, expected a tensor of shape {shape}")
        return False
    if tuple(got.shape) != shape:
        detail = f"shape {tuple(got.shape)}, expected {shape}"
        hint_text = shape_hint(tuple(got.shape), shape)
        if hint_text:
            detail += f" ({hint_text[2:]})"
        report.add(name, False, f"{detail}. {hint}".strip())
        return False
    got64, exp64 = got.detach().to(torch.float64), expected.detach().to(torch.float64)
    if not torch.isfinite(got64).all():
        report.add(name, False, f"shape {shape}, but it contains NaN or inf")
        return False
    err = (got64 - exp64).abs()
    largest = err.max().item() if err.numel() else 0.0
    ok = torch.allclose(got64, exp64, **TOLERANCE)
    if ok:
        report.add(name, True, f"shape {shape}, largest error {largest:.1e}")
    else:
        where = tuple(int(i) for i in torch.unravel_index(err.argmax(), err.shape))
        report.add(name, False, f"shape {shape}, largest error {largest:.3g} at index {where}. {hint}".strip())
    return ok


def raised(report: Report, name: str, e: Exception, names=()) -> Report:
    """Add a failed line to ``report`` saying, in course terms, what the student's code raised."""
    report.add(name, False, explain(e, names))
    return report


def is_stub(error: BaseException) -> bool:
    """Whether ``error`` says the answer is not written yet: an exercise's stub raises
    ``NotImplementedError`` until the student replaces it."""
    return isinstance(error, NotImplementedError)


def as_number(value):
    """A number a student's code returned, as a Python number: a one-element tensor is read with
    ``.item()``; anything else comes back as it is, for the check to judge."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    return value


def random_float64(*shapes, seed: int = 0) -> list:
    """One standard-normal float64 tensor per shape, drawn in order from a generator seeded ``seed``."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]
