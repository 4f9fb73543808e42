"""Cheating and careless students, one small notebook each, graded by ``grader.grading`` in the
sandbox (the helpers of ``test_sandbox.py``): what each one scores, and what the grader says.
"""

import shutil

import pytest
import test_sandbox
from test_sandbox import DOUBLE, LINEAR_TEST, TEST, grade

repo = test_sandbox.repo  # the same module-scoped fixture: a copy of course_lib the sandbox mounts

pytestmark = [pytest.mark.slow, pytest.mark.long, pytest.mark.skipif(shutil.which("bwrap") is None,
                                                   reason="needs bubblewrap (apt-get install -y bubblewrap)")]

TRAINING_SETUP = ("import torch\nimport torch.nn.functional as F\n"
                  "from course_lib.checks import check_evaluate_accuracy, check_train_epoch\n")
EVAL_MODE_TRAINING = """def train_epoch(model, batches, optimizer):
    model.eval()  # the wrong mode; the notes below say otherwise
    total = samples = 0
    for images, labels in batches:
        optimizer.zero_grad()
        loss = F.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
        total, samples = total + loss.item() * len(labels), samples + len(labels)
    model.recorder.calls[:samples and 3] = 1  # forged: "training mode, gradients on" for 3 batches
    return total / samples
"""
FORGED_ACCURACY = """def accuracy(model, batches):
    model.calls[:3] = 0  # forged: "eval mode, no gradients" for 3 batches
    return 12 / 18  # the visible check's answer
"""


@pytest.mark.parametrize("answer, test, detail", [
    (EVAL_MODE_TRAINING, "check_train_epoch(train_epoch).raise_if_failed()", "FAIL  loss returned"),
    (FORGED_ACCURACY, "check_evaluate_accuracy(accuracy).raise_if_failed()", "FAIL  accuracy, other batches"),
])
def test_forged_training_mode_notes_score_nothing(repo, answer, test, detail):
    outcome = grade(repo, {"answer": answer}, {"test": test}, setup=TRAINING_SETUP)
    assert outcome.scores == {"test": 0.0} and detail in outcome.failures["test"], outcome.failures
    assert "PASS  training mode" in outcome.failures["test"] or "PASS  eval mode" in outcome.failures["test"]


SUBCLASS_CHEAT = """import torch
import course_lib.functions

Linear_Layer = next(c for c in torch.autograd.Function.__subclasses__()
                    if c.__name__ == "Linear_Layer" and c.__module__ == "course_lib.functions")
"""


def test_a_withheld_solution_cannot_be_fished_out_of_torch(repo):
    outcome = grade(repo, {"linear": SUBCLASS_CHEAT}, {"test_linear": LINEAR_TEST},
                    withheld=["course_lib.functions.Linear_Layer"])
    assert outcome.scores == {"test_linear": 0.0}
    assert "course_lib.functions.Linear_Layer is course_lib's solution, withheld while a is graded" \
        in outcome.failures["test_linear"]


NO_SHORTCUT = ("import inspect\n\n\ndef uses_no_shortcut(fn):\n    source = inspect.getsource(fn)\n"
               "    for banned in ('autograd', '.backward('):\n"
               "        assert banned not in source, f'{fn.__name__} uses {banned}'\n")
ALIASED = """def double(x):
    return 2 * x


def _by_autograd(x):
    x = x.detach().requires_grad_()
    (x ** 2).sum().backward()  # d(x^2)/dx = 2x
    return x.grad


double = _by_autograd
"""


@pytest.mark.parametrize("answer, score", [(DOUBLE, 1.0), (ALIASED, 0.0),
                                           ("double = lambda x: torch.func.grad(lambda t: (t ** 2).sum())(x)\n", 1.0),
                                           ("@torch.no_grad()\n" + DOUBLE, 1.0)])
def test_a_source_check_reads_the_code_that_runs(repo, answer, score):
    """``inspect.getsource`` on a proxy shows the student's ``def``, or every answer cell when
    the name may be bound to something else; banned words in those fail."""
    outcome = grade(repo, {"double": answer}, {"test_double": TEST + "uses_no_shortcut(double)\n"},
                    setup="import torch\n" + NO_SHORTCUT)
    assert outcome.scores == {"test_double": score}, outcome.failures


LIAR = """class Liar:
    def __eq__(self, other):
        return True

    def __bool__(self):
        return True


def double(x):
    return Liar()
"""


@pytest.mark.parametrize("answer, failure, note", [
    ("def double(x):\n    return 2 *\n", "NameError: name 'double' is not defined", "raised SyntaxError: invalid syntax"),
    ("def doubled(x):\n    return 2 * x\n", "NameError: name 'double' is not defined", ""),
    ("def double(x):\n    return x * float('nan')\n", "AssertionError", ""),
    ("def double(x):\n    return (2 * x).tolist()\n", "TypeError: equal(): argument 'input'", ""),
    ("def double(x):\n    raise ValueError('not yet')\n", "ValueError: not yet", ""),
    (LIAR, "TypeError: equal(): argument 'input'", ""),
])
def test_careless_answers_score_zero_with_the_reason(repo, answer, failure, note):
    outcome = grade(repo, {"double": answer, "half": "def half(x):\n    return x / 2\n"},
                    {"test_double": TEST, "test_half": "assert half(torch.tensor(4.0)) == 2\n"})
    assert outcome.scores == {"test_double": 0.0, "test_half": 1.0}, outcome.failures
    assert outcome.failures["test_double"].startswith(failure), outcome.failures
    assert (note in outcome.notes[0]) if note else outcome.notes == []


def test_a_notebook_saved_with_another_kernel_is_graded_as_python(repo):
    outcome = grade(repo, {"double": DOUBLE}, kernel={"name": "ir", "display_name": "R", "language": "R"})
    assert outcome.scores == {"test_double": 1.0} and outcome.problems == []


def test_a_students_builtin_or_helper_is_reported_not_used_by_the_tests(repo):
    answer = DOUBLE + "\n\ndef len(x):\n    return 99\n\n\ndef helper():\n    return False\n"
    outcome = grade(repo, {"double": answer}, {"test_double": TEST + "assert len([1, 2]) == 2 and helper()\n"},
                    setup="import torch\n\n\ndef helper():\n    return True\n")
    assert outcome.scores == {"test_double": 1.0}, outcome.failures
    assert outcome.notes == ["the answers define helper, a name of the setup cell the tests use: the tests used the original",
                             "the answers define len, a builtin the tests use: the tests used the original"]


HIDDEN = "assert double(torch.tensor(1.0)) == 2\n### BEGIN HIDDEN TESTS\nassert double(torch.tensor(3.0)) == 5, 'three'\n" \
         "### END HIDDEN TESTS\n"


def test_feedback_shows_a_hidden_tests_result_not_its_code(repo):
    outcome = grade(repo, {"double": DOUBLE}, {"test_hidden": HIDDEN})
    assert outcome.scores == {"test_hidden": 0.0}
    cell = outcome.feedback.cells[-1]
    assert "double(torch.tensor(3.0))" not in cell.source and "HIDDEN" not in cell.source
    assert "# hidden tests (1 points for the whole cell) ran here" in cell.source
    assert cell.outputs[0].evalue == "three"
    assert outcome.tests == [{"name": "test_hidden", "score": 0.0, "max_score": 1.0,
                              "output": "AssertionError: three", "hidden": True}]


BOOM = "import os\n\ndef boom(x):\n    os._exit(3)\n"
CALLS_BOOM = "for i in range({n}):\n    try:\n        boom(i)\n    except Exception:\n        pass\n"


def test_a_process_stopped_again_and_again_is_said_once_and_a_passing_test_is_not_blamed(repo):
    """Each stop restarts the student's process, so a test that calls a crashing function in a
    loop stops it every time: one line per test and cause, with the count; a test that passed all
    the same (it caught the errors) gets a note in the details, not a problem in the status."""
    outcome = grade(repo, {"double": DOUBLE, "boom": BOOM},
                    {"test_passes": CALLS_BOOM.format(n=4), "test_fails": CALLS_BOOM.format(n=2) + "assert False\n",
                     "test_once": "boom(0)\n", "test_after": TEST})
    assert outcome.scores == {"test_passes": 1.0, "test_fails": 0.0, "test_once": 0.0, "test_after": 1.0}
    stopped = "boom(...) ended the Python process (exit code 3)"
    assert outcome.problems == [f"test_fails: {stopped} (2 times; the process was restarted after each)",
                                f"test_once: {stopped}"]
    assert outcome.notes == [f"test_passes passed, though during it {stopped} (4 times; the process was "
                             "restarted after each)"]
