"""What one call costs, counted instead of timed: the aten operators it dispatches, the Python
functions it enters.

A wall clock on a shared machine swings by 10-20% from one run to the next; these counts are the
same on every run and every machine, so a test can hold a layer to a budget (tests/
test_dispatch_budget.py) and a lesson can print them (lesson 10). Each aten operator is one trip
through PyTorch's dispatcher to a kernel; each Python call is interpreter work that ``F.linear``,
written in C++, does not do.

    counts = count_calls(lambda: layer(x).backward(g))
    counts.aten_ops       # ('addmm', 't', 'mm', ...): every operator dispatched, in order
    counts.python_calls   # every Python function entered (PyTorch's own included)
    counts.own_calls      # those entered in course_lib's code: ('linear', 'forward', ...)
"""

import os
import sys
from dataclasses import dataclass

from torch.utils._python_dispatch import TorchDispatchMode

_PACKAGE = os.path.dirname(os.path.abspath(__file__))


@dataclass(frozen=True)
class CallCounts:
    """What one run of a step dispatched and called."""

    aten_ops: tuple  # the operators' names, in the order they ran
    python_calls: int  # Python functions entered, every module's
    own_calls: tuple  # the names of those defined in course_lib, in the order entered


class _AtenLog(TorchDispatchMode):
    """Record the name of every aten operator dispatched while active (forward and backward)."""

    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


def count_calls(step) -> CallCounts:
    """Run ``step()`` three times: a warm-up, once counting operators, once counting Python calls.

    The two counts come from separate runs, so that neither sees the other's bookkeeping; the
    step is deterministic, so both runs do the same work. ``step`` itself is not counted.
    """
    step()
    with _AtenLog() as log:
        step()
    entered = []

    def profile(frame, event, arg):
        if event == "call":
            entered.append(frame.f_code)

    sys.setprofile(profile)
    try:
        step()
    finally:
        sys.setprofile(None)
    entered = entered[1:]  # step's own frame
    own = tuple(code.co_name for code in entered
                if os.path.abspath(code.co_filename).startswith(_PACKAGE + os.sep))
    return CallCounts(tuple(log.names), len(entered), own)
