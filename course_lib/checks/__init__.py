"""Checks for students' code, with feedback in plain words.

Each ``check_*`` function runs a student's implementation against PyTorch on fresh random inputs
and returns a ``Report``: one line per thing checked (pass/fail, the shape received and expected,
the largest error). A report prints itself, is truthy when everything passed, and
``report.raise_if_failed()`` turns it into an ``AssertionError`` carrying the same text, which is
what a graded test cell wants.

    >>> report = check_linear_backward(MyLinear)      # an autograd Function class
    >>> report = check_linear_backward(my_backward)   # or backward(grad_out, x, w, b) -> 3 grads
    >>> print(report)

The checks live in these modules, all importable from here::

    report           Report and compare: the report every check returns, the helpers that fill it,
                     one convention each: raised (an exception), is_stub (an answer not written
                     yet), as_number (a returned number); lessons keep their own solutions
    autograd         FakeCtx: a Function's forward and backward run by hand, errors in course terms
    linear           a Linear layer's forward and gradients, also when an input needs no gradient
    function         any autograd Function against a reference op, and against finite differences
    exercise_runner  ``exercise``: runs an exercise's check, NOT ATTEMPTED while the answer is a stub
    forward          lesson 1: a network's parameter count, a scale and shift folded into a layer
    backward         lessons 2 and 4: a backward written by hand against autograd
    training         lessons 4, 5 and 10: an SGD step by hand, one optimizer step, an accuracy
    design           lesson 8: interaction effects, a fractional design that keeps main effects clear
    modules          lesson 10: an MLP of the course's layers, an RMSNorm module
    backprop         cross-entropy and MLP gradients, a whole manual step (lesson 5, assignment 5)
    modern           lesson 9: a Function in today's style, vmap over parameters
    distributed      combining shards' gradients, each process's share of a batch (lesson 11)
    thought          bug hunts and derivations: an initial scale, layers a module must register
                     (lesson 6), an in-place Function, a layer used twice, RMSNorm's backward, a
                     parameter a module must register (lessons 9, 10 and 11)
    triton           lesson 12: a reduction kernel, an off-by-one mask, tile sizes
    assignments      the checks of the graded nbgrader assignments
    student          lessons 1, 2 and 4's "Your turn" cells: forward, three gradients, a Function, a step
    student_loss     lessons 5-6's "Your turn" cells: cross-entropy atom by atom, an MLP's
                     backward, a scalar engine
    derivations      lessons 1, 2 and 4: a standardisation folded into a layer, a jvp, weight decay
"""

from .assignments import check_evaluate_accuracy, check_gradients, check_linear_random, check_train_epoch
from .autograd import FakeCtx
from .backprop import check_cross_entropy_backward, check_manual_step, check_mlp_gradients, mlp_gradients
from .backward import check_backward, check_relu_mlp_gradients, check_torch_layout_backward
from .derivations import check_fold_standardization, check_linear_jvp, check_weight_decay_step
from .design import check_design, check_interaction
from .distributed import check_combine_gradients, check_shard_bounds
from .exercise_runner import exercise
from .forward import check_fold_scale_shift, check_parameter_count
from .function import check_function, check_gradcheck
from .linear import check_linear_backward, check_linear_forward, check_linear_needs_grad
from .modern import check_ensemble, check_modern_function
from .modules import check_mlp, check_rms_norm
from .report import TOLERANCE, Line, Report, compare
from .student import check_backward_and_step, check_forward, check_linear_function, check_linear_gradients
from .student_loss import check_cross_entropy_atoms, check_mlp_backward, check_scalar_engine
from .thought import (
    check_in_place_function,
    check_init_std,
    check_module_list,
    check_registered_parameters,
    check_rms_norm_backward,
    check_shared_layer_grads,
)
from .training import (
    check_accuracy,
    check_clipped_train_step,
    check_sgd_step,
    check_sgd_update,
    check_train_step,
)
from .triton import check_grad_bias_kernel, check_row_mask_kernel, check_tile_choice

__all__ = [
    "TOLERANCE", "FakeCtx", "Line", "Report", "compare", "exercise",
    # the Linear layer, any Function, an SGD step, an accuracy
    "check_linear_forward", "check_linear_backward", "check_linear_needs_grad",
    "check_function", "check_gradcheck", "check_sgd_step", "check_accuracy",
    # the lessons' exercises, in reading order
    "check_parameter_count", "check_fold_scale_shift",
    "check_backward", "check_torch_layout_backward", "check_relu_mlp_gradients",
    "check_sgd_update", "check_train_step", "check_clipped_train_step",
    "check_cross_entropy_backward", "check_manual_step", "check_mlp_gradients", "mlp_gradients",
    "check_interaction", "check_design",
    "check_modern_function", "check_ensemble",
    "check_mlp", "check_rms_norm",
    "check_combine_gradients", "check_shard_bounds",
    "check_in_place_function", "check_init_std", "check_module_list", "check_shared_layer_grads", "check_registered_parameters",
    "check_rms_norm_backward",
    "check_grad_bias_kernel", "check_row_mask_kernel", "check_tile_choice",
    # the lessons' "Your turn" cells, in reading order
    "check_forward", "check_linear_gradients", "check_linear_function", "check_backward_and_step",
    "check_cross_entropy_atoms", "check_scalar_engine", "check_mlp_backward",
    "check_fold_standardization", "check_linear_jvp", "check_weight_decay_step",
    # the graded assignments
    "check_evaluate_accuracy", "check_gradients", "check_linear_random", "check_train_epoch",
]
