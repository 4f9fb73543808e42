"""Checks for students' code, with feedback in plain words.

Each ``check_*`` function runs a student's implementation against PyTorch on fresh random inputs
and returns a ``Report``: one line per thing checked (pass/fail, the shape received and expected,
the largest error). A report prints itself, is truthy when everything passed, and
``report.raise_if_failed()`` turns it into an ``AssertionError`` carrying the same text, which is
what a graded test cell wants.

    >>> report = check_linear_backward(MyLinear)      # an autograd Function class
    >>> report = check_linear_backward(my_backward)   # or backward(grad_out, x, w, b) -> 3 grads
    >>> print(report)

The checks live in these modules, all importable from here:
    core         Report, compare, and the checks of the Linear layer, gallery Functions, SGD step
    autograd     FakeCtx: a Function's forward and backward run by hand, errors in course terms
    lessons      ``exercise`` and the checks of the lesson exercises
    assignments  the checks of the graded nbgrader assignments
    backprop     cross-entropy and MLP gradients, a whole manual step (lesson 4, assignment 5)
    modern       lesson 8: a Function in today's style, vmap over parameters
    distributed  combining shards' gradients, each process's share of a batch (lesson 10)
"""

from .assignments import (
    check_evaluate_accuracy, check_gradients, check_linear_random, check_train_epoch,
)
from .autograd import FakeCtx
from .core import (
    TOLERANCE, Line, Report, check_accuracy, check_function, check_gradcheck,
    check_linear_backward, check_linear_forward, check_linear_needs_grad, check_sgd_step, compare,
)
from .distributed import check_combine_gradients, check_shard_bounds
from .lessons import (
    check_backward, check_mlp, check_parameter_count, check_sgd_update, check_train_step, exercise,
)
from .lessons import (  # the exercises that need a derivation the lesson does not print
    check_design, check_fold_scale_shift, check_interaction,
    check_relu_mlp_gradients, check_rms_norm, check_torch_layout_backward,
)
from .modern import check_ensemble, check_modern_function

__all__ = [
    "TOLERANCE", "FakeCtx", "Line", "Report", "compare",
    "check_accuracy", "check_function", "check_gradcheck", "check_linear_backward",
    "check_linear_forward", "check_linear_needs_grad", "check_sgd_step",
    "exercise", "check_backward", "check_mlp", "check_parameter_count", "check_sgd_update",
    "check_train_step",
    "check_design", "check_fold_scale_shift", "check_interaction",
    "check_relu_mlp_gradients", "check_rms_norm", "check_torch_layout_backward",
    "check_evaluate_accuracy", "check_gradients", "check_linear_random", "check_train_epoch",
    "check_modern_function", "check_ensemble",
    "check_combine_gradients", "check_shard_bounds",
]

from .backprop import (  # noqa: E402  (lesson 4 and assignment 5)
    check_cross_entropy_backward, check_manual_step, check_mlp_gradients, mlp_gradients,
)

__all__ += ["check_cross_entropy_backward", "check_manual_step", "check_mlp_gradients", "mlp_gradients"]
