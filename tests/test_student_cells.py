"""The "Your turn" cells of lessons 1, 2 and 4-6 (issue 21), run from the notebooks themselves.

Each lesson's collapsed solution cell (tag ``solution``) is executed after the lesson's imports: its
own asserts make every check pass. Each "Your turn" cell, untouched, reports NOT ATTEMPTED (also in
the committed output of its check cell). And each solution, broken the way students break it (a
transpose, a mean for a sum, a bias that may be ``None``, a wrong order), fails its check with a
report that names the mistake. Only the few cells involved run, not the whole lessons.
"""

import ast
import contextlib
import io
from pathlib import Path

import nbformat
import pytest

from course_lib import checks

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
L1, L2, L3, L4, L5 = ("01_forward_pass", "02_backward_derivations", "04_manual_three_layer_step",
                      "05_backprop_all_the_way", "06_autograd_and_modules")

# (lesson, the student's cell, its check, the name the student defines, the solution's name)
YOUR_TURN = [
    (L1, "yt-01-forward", "check_forward", "my_forward", "solution_forward"),
    (L2, "yt-02-gradients", "check_linear_gradients", "my_gradients", "solution_gradients"),
    (L2, "yt-02-function", "check_linear_function", "MyLinear", "SolutionLinear"),
    (L3, "yt-03-step", "check_backward_and_step", "my_backward_and_step", "solution_backward_and_step"),
    (L4, "yt-04-atoms", "check_cross_entropy_atoms", "my_atoms", "solution_atoms"),
    (L5, "yt-05-engine", "check_scalar_engine", "Scalar", "SolutionScalar"),
    (L4, "yt-04-mlp", "check_mlp_backward", "my_mlp_backward", "solution_mlp_backward"),
]

# (lesson, solution, [(text in the solution cell, the typical mistake in its place)], words the
# report must contain)
BROKEN = [
    (L1, "solution_forward", [("return y if b is None else y + b", "return y + b")], "b is None here"),
    (L1, "solution_forward", [("return y if b is None else y + b", "return y")], "the bias is missing"),
    (L1, "solution_forward", [("y = x @ w ", "y = x @ w.T ")], "needs no transpose"),
    (L2, "solution_gradients", [("grad_input = G @ W.T  #", "grad_input = G @ W  #")], "write down each factor's shape"),
    (L2, "solution_gradients", [("grad_weight = X.T @ G  #", "grad_weight = G.T @ X  #")], "transposed?"),
    (L2, "solution_gradients", [("grad_bias = G.sum(0)  #", "grad_bias = G.mean(0)  #")], "a sum, not a mean"),
    (L2, "solution_gradients", [("grad_bias = G.sum(0)  #", "grad_bias = G  #")], "not summed over the batch"),
    (L2, "solution_gradients", [("grad_bias = G.sum(0)  #", "grad_bias = G.sum(1)  #")], "summed over the outputs"),
    (L2, "SolutionLinear", [("return Y if b is None else Y + b", "return Y + b")], "b is None then"),
    (L2, "SolutionLinear", [("grad_bias = G.sum(0) if ctx.has_bias and needs[2] else None",
                             "grad_bias = G.sum(0)")], "backward returned 3 gradients for 2 inputs"),
    (L2, "SolutionLinear", [("ctx.save_for_backward(X if needs_w else None, W if needs_x else None)",
                             "ctx.save_for_backward(X, W)"),
                            ("grad_input = G @ W.T if needs[0] else None", "grad_input = G @ W.T"),
                            ("grad_weight = X.T @ G if needs[1] else None", "grad_weight = X.T @ G")],
     "computed although ctx.needs_input_grad says no one needs it"),
    (L3, "solution_backward_and_step", [("for k in (3, 2, 1):", "for k in (1, 2, 3):")], "start with the last layer"),
    (L3, "solution_backward_and_step", [("p -= lr * grads[name]", "p = p - lr * grads[name]")],
     "rebound the name p"),
    (L3, "solution_backward_and_step", [('grads[f"weight{k}"], grads[f"bias{k}"] = linears',
                                         'grads[f"bias{k}"], grads[f"weight{k}"] = linears')],
     "Unpack each backward as (grad_input, grad_weight, grad_bias)"),
    (L4, "solution_atoms", [("/ picked.shape[0]", "")], "the mean divides by B"),
    (L4, "solution_atoms", [("    return out\n", "    return grad\n")], "its label's column"),
    (L4, "solution_atoms", [("return grad / p", "return grad * p")], "1/p, not p"),
    (L4, "solution_atoms", [("return p * (grad - (grad * p).sum(dim=1, keepdim=True))",
                             "return grad * p * (1 - p)")], "only the diagonal of softmax's Jacobian"),
    (L4, "solution_atoms", [("return grad.unsqueeze(1) * torch.softmax(z, dim=1)",
                             "return grad.unsqueeze(1) * z.exp() / z.exp().sum(dim=1, keepdim=True)")],
     "exp overflowed"),
    (L5, "SolutionScalar", [("parent.grad += local * value.grad", "parent.grad = local * value.grad")],
     "add them up (+=)"),
    (L5, "SolutionScalar", [("for value in reversed(order):", "for value in order:")], "topological order"),
    (L4, "solution_mlp_backward", [('dz2 = (G @ p["weight3"].T) * (c["z2"] > 0)', 'dz2 = G @ p["weight3"].T')],
     "without ReLU 2's mask"),
    (L4, "solution_mlp_backward", [('dz2.sum(0)', 'dz2.mean(0)')], "dL/dbias2 sums dL/dz2 over the batch's rows"),
    (L4, "solution_mlp_backward", [('"weight3": c["h2"].T @ G', '"weight3": G.T @ c["h2"]')],
     "shape (10, 64), expected (64, 10)"),
]


def load(lesson: str):
    return nbformat.read(NOTEBOOKS / f"{lesson}.ipynb", as_version=4)


def cell(nb, cell_id: str):
    return next(c for c in nb.cells if c.get("id") == cell_id)


def imports_of(nb) -> str:
    """The import statements of the lesson's first code cell (nothing it prints or sets)."""
    first = next(c for c in nb.cells if c.cell_type == "code").source
    tree = ast.parse(first)
    keep = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    return ast.unparse(ast.Module(body=keep, type_ignores=[]))


def solution_cell(nb) -> str:
    found = [c for c in nb.cells if "solution" in c.metadata.get("tags", [])]
    assert len(found) == 1, "each lesson has one solution cell, tagged 'solution'"
    return found[0].source


def run(lesson: str, *sources: str) -> dict:
    """A namespace with the lesson's imports, after running ``sources`` in it (stdout captured)."""
    nb = load(lesson)
    namespace = {}
    with contextlib.redirect_stdout(io.StringIO()) as out:
        exec(imports_of(nb), namespace)
        for source in sources:
            exec(source, namespace)
    namespace["__stdout__"] = out.getvalue()
    return namespace


@pytest.mark.parametrize("lesson", [L1, L2, L3, L4, L5])
def test_the_solution_cell_passes_every_check_and_comes_last_collapsed(lesson):
    nb = load(lesson)
    last = nb.cells[-1]
    assert "solution" in last.metadata.get("tags", []) and last.metadata["jupyter"]["source_hidden"]
    namespace = run(lesson, solution_cell(nb))  # its asserts: every check passes
    for entry in (e for e in YOUR_TURN if e[0] == lesson):
        _, _, check, _, solution = entry
        report = getattr(checks, check)(namespace[solution])
        assert report.passed, str(report)


@pytest.mark.parametrize("entry", YOUR_TURN, ids=[e[1] for e in YOUR_TURN])
def test_an_untouched_cell_reports_not_attempted_now_and_in_the_committed_output(entry):
    lesson, cell_id, check, student, _ = entry
    nb = load(lesson)
    source, check_cell = cell(nb, cell_id), cell(nb, f"{cell_id}-check")
    assert "raise NotImplementedError" in source.source and "Your turn" in nb.cells[
        nb.cells.index(source) - 1].source
    assert f"checks.{check}(" in check_cell.source and student in check_cell.source
    printed = run(lesson, source.source, check_cell.source)["__stdout__"]
    assert printed.startswith(f"{check}") and "NOT ATTEMPTED" in printed, printed
    committed = "".join(o.get("text", "") for o in check_cell.outputs)
    assert committed == printed


@pytest.mark.parametrize("entry", BROKEN, ids=[f"{e[1]}-{e[3][:24]}" for e in BROKEN])
def test_a_typically_broken_solution_fails_and_the_report_names_the_mistake(entry):
    lesson, solution, changes, words = entry
    source = solution_cell(load(lesson))
    for old, new in changes:
        assert source.count(old) == 1, f"{old!r} is not in the solution cell exactly once"
        source = source.replace(old, new)
    # Drop the cell's own asserts: the broken solution is meant to fail them.
    source = "\n".join(line for line in source.splitlines() if not line.startswith("assert checks."))
    namespace = run(lesson, source)
    check = next(e[2] for e in YOUR_TURN if e[0] == lesson and e[4] == solution)
    report = getattr(checks, check)(namespace[solution])
    assert not report.passed and "NOT ATTEMPTED" not in str(report)
    assert words in str(report), str(report)
