"""Linear Layer from Scratch: the companion library of the course.

The pieces, in the order the lessons meet them:
    functions  autograd Functions (the plain ``Linear_Layer`` and the gallery)
    fast       ``FastLinear``: ``Linear_Layer`` with the production concerns, what ``Linear`` runs
    counting   a call's cost counted (aten operators, Python calls), lesson 10 and the budget test
    manual     ``ManualLinear``, the same layer with a hand-called backward
    layers     ``nn.Module`` layers (``Linear``, ``ScaledReLU``, ``LearnedSiLUModule``)
    models     ``NeuralNet`` (784-128-64-10) and ``CustomModel``
    ops        ``torch.ops.course_lib.linear``, the layer as a ``torch.library`` custom op

and the machinery around them (the README's "How the code is organised" has the map):
    device                 ``resolve_device``: the device, chosen once (a lesson's first cell)
    paths, idx, datasets   where data and runs live, the IDX file format, datasets by name
    config, train          a run's settings (``TrainConfig``) and the training loop (``fit``)
    checkpoint, runlog     what a run saves to resume, and the run record it logs
    files                  writable folders and atomic files
    distributed            the hooks that run ``fit`` on several processes (torchrun, DDP), lesson 11
    sweep, analysis, cli   sweeps, the run log read back, ``python -m course_lib``
    checks                 student-facing checks with feedback in course terms
"""

from . import ops  # noqa: F401  (importing it registers torch.ops.course_lib.linear)
from .functions import Linear_Layer
from .layers import Linear
from .manual import ManualLinear
from .models import NeuralNet

__all__ = ["Linear_Layer", "Linear", "ManualLinear", "NeuralNet"]
__version__ = "0.1.0"
