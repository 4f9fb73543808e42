"""``exercise``: the runner of every lesson's exercise cell.

``exercise`` runs a check on the student's answer. While that answer is still the stub raising
``NotImplementedError``, it reports NOT ATTEMPTED (and, given the lesson's solution, makes sure
that one passes, so a broken lesson cannot hide behind an unwritten answer).
"""

import functools

import torch

from .autograd import is_function_class
from .report import Report, is_stub


def _watch_for_stub(answer, seen: list):
    """Wrap ``answer`` (a callable or a Function class) to note in ``seen`` a NotImplementedError."""

    def guard(fn):
        @functools.wraps(fn)
        def guarded(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except Exception as e:
                if is_stub(e):
                    seen.append(fn.__name__)
                raise
        return guarded

    if not is_function_class(answer):
        return guard(answer) if callable(answer) else answer

    class Guarded(answer):
        forward = staticmethod(guard(answer.forward))
        backward = staticmethod(guard(answer.backward))

    # Only a Function that defines setup_context has it wrapped: torch reads an overridden
    # setup_context as "forward takes no ctx", which would break an old-style Function.
    if answer.setup_context is not torch.autograd.Function.setup_context:
        Guarded.setup_context = staticmethod(guard(answer.setup_context))
    Guarded.__name__ = Guarded.__qualname__ = answer.__name__
    return Guarded


class NotAttempted(Report):
    """The report of an exercise whose answer is still the stub: it never passes."""

    def __str__(self) -> str:
        rows = [f"{self.title}: NOT ATTEMPTED"]
        rows += [f"  {line.detail}" for line in self.lines]
        return "\n".join(rows)

    __repr__ = __str__


def exercise(check, answer, solution=None, **kwargs) -> Report:
    """``check(answer)``, or a NOT ATTEMPTED report while the student's answer is still the stub.

    The answer counts as not written yet when it raised ``NotImplementedError`` and no line of
    its report passed. ``solution``, when given, is checked too, silently: a lesson whose own
    solution fails its check raises ``AssertionError`` (that is a bug in the lesson). ``kwargs``
    go to ``check`` (e.g. ``forward=`` and ``shapes=`` for ``check_backward``).
    """
    if solution is not None:
        check(solution, **kwargs).raise_if_failed()
    seen = []
    report = check(_watch_for_stub(answer, seen), **kwargs)
    if not seen or any(line.passed for line in report.lines):
        return report
    name = getattr(answer, "__name__", "your answer")
    stub = NotAttempted(getattr(check, "__name__", "check"))
    stub.add("stub", False, f"{name} still raises NotImplementedError: replace it with your code, "
                            "then run this cell again.")
    return stub
