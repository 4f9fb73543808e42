"""Tests of course_lib/checks/student.py, student_loss.py and derivations.py: the checks of the
"Your turn" cells and of the derivation exercises of lessons 1, 2, 4 and 5.

Each check must pass a right answer, report NOT ATTEMPTED for a stub, and fail a wrong answer with
words that name the mistake. (tests/test_student_cells.py runs the same checks on the lessons'
own cells.)
"""

import math

import pytest
import torch

from course_lib import checks


def stub(*args):
    raise NotImplementedError


def fold_standardization(w, b, mu, s):
    return w / s.unsqueeze(1), b - (mu / s) @ w


def weight_decay_step(params, lr, decay, decay_biases=False, sign=1.0):
    with torch.no_grad():
        for name, p in params.items():
            decayed = name.startswith("weight") or decay_biases
            p -= lr * (p.grad + sign * decay * p if decayed else p.grad)


ATOMS = {
    "mean": lambda g, picked: -g * torch.ones_like(picked) / picked.shape[0],
    "pick": lambda g, logp, labels: torch.zeros_like(logp).index_put_((torch.arange(len(labels)), labels), g),
    "log": lambda g, p: g / p,
    "softmax": lambda g, p: p * (g - (g * p).sum(1, keepdim=True)),
    "logsumexp": lambda g, z: g.unsqueeze(1) * torch.softmax(z, 1),
}

# (check, right answer, [(wrong answer, words the report must contain)])
CASES = [
    (checks.check_forward, lambda x, w, b: x @ w if b is None else x @ w + b,
     [(lambda x, w, b: x @ w + b, "b is None here"), (lambda x, w, b: x @ w, "the bias is missing")]),
    (checks.check_linear_gradients, lambda G, X, W: (G @ W.T, X.T @ G, G.sum(0)),
     [(lambda G, X, W: (G @ W.T, X.T @ G, -G.sum(0)), "sign is flipped"),
      (lambda G, X, W: (G @ W.T, X.T @ G / 4, G.sum(0)), "no division by B")]),
    (checks.check_fold_standardization, fold_standardization,
     [(lambda w, b, mu, s: (w / s.unsqueeze(1), b), "the mean's shift"),
      (lambda w, b, mu, s: (w * s.unsqueeze(1), b - (mu / s) @ w), "divided by s, not multiplied"),
      (lambda w, b, mu, s: (w / s, b), "one entry per input")]),
    (checks.check_linear_jvp, lambda x, w, b, dx, dw, db: dx @ w + x @ dw + db,
     [(lambda x, w, b, dx, dw, db: x @ dw + db, "dX W, is missing"),
      (lambda x, w, b, dx, dw, db: dx @ w + x @ dw, "db is missing"),
      (lambda x, w, b, dx, dw, db: dx @ w + x @ dw + dx @ dw + db, "second order")]),
    (checks.check_weight_decay_step, weight_decay_step,
     [(lambda p, lr, d: weight_decay_step(p, lr, d, decay_biases=True), "bias was decayed too"),
      (lambda p, lr, d: weight_decay_step(p, lr, 0.0), "No decay"),
      (lambda p, lr, d: weight_decay_step(p, lr, d, sign=-1.0), "wrong sign"),
      (lambda p, lr, d: weight_decay_step(p, lr, d / 2), "Half the decay")]),
    (checks.check_cross_entropy_atoms, ATOMS,
     [({**ATOMS, "mean": lambda g, picked: g * torch.ones_like(picked) / picked.shape[0]}, "sign is flipped"),
      ({**ATOMS, "logsumexp": lambda g, z: g.unsqueeze(1).expand_as(z)}, "not 1 for every logit")]),
]
IDS = [case[0].__name__ for case in CASES]


@pytest.mark.parametrize("check, right, wrongs", CASES, ids=IDS)
def test_a_right_answer_passes_and_a_stub_is_not_attempted(check, right, wrongs):
    assert check(right).passed, str(check(right))
    answer = {name: stub for name in ATOMS} if isinstance(right, dict) else stub
    report = check(answer)
    assert not report.passed and str(report).startswith(f"{check.__name__}: NOT ATTEMPTED")


@pytest.mark.parametrize("check, right, wrongs", CASES, ids=IDS)
def test_a_wrong_answer_fails_with_the_mistake_named(check, right, wrongs):
    for wrong, words in wrongs:
        report = check(wrong)
        assert not report.passed and "NOT ATTEMPTED" not in str(report)
        assert words in str(report), str(report)


def test_a_partly_written_answer_is_checked_and_its_stubs_named():
    report = checks.check_cross_entropy_atoms({**ATOMS, "pick": stub})
    assert not report.passed and "NOT ATTEMPTED" not in report.title
    assert [line.name for line in report.lines if not line.passed] == ["pick backward"]
    assert "still raises NotImplementedError" in report.lines[1].detail


class Engine:
    """A right scalar engine, and (with ``overwrite`` or ``forward_order``) two classic bugs."""

    overwrite = forward_order = False

    def __init__(self, data, parents=(), local_grads=()):
        self.data, self.grad, self.parents, self.local_grads = float(data), 0.0, parents, local_grads

    def _new(self, data, parents, local):
        return type(self)(data, parents, local)

    def __add__(self, other):
        return self._new(self.data + other.data, (self, other), (1.0, 1.0))

    def __mul__(self, other):
        return self._new(self.data * other.data, (self, other), (other.data, self.data))

    def relu(self):
        return self._new(max(self.data, 0.0), (self,), (float(self.data > 0),))

    def tanh(self):
        t = math.tanh(self.data)
        return self._new(t, (self,), (1 - t * t,))

    def backward(self):
        order, seen = [], set()

        def visit(v):
            if v not in seen:
                seen.add(v)
                for p in v.parents:
                    visit(p)
                order.append(v)

        visit(self)
        self.grad = 1.0
        for v in (order if self.forward_order else reversed(order)):
            for p, local in zip(v.parents, v.local_grads):
                p.grad = local * v.grad + (0.0 if self.overwrite else p.grad)


class Overwrites(Engine):
    overwrite = True


class ForwardOrder(Engine):
    forward_order = True


class StubEngine(Engine):
    __add__ = __mul__ = relu = tanh = backward = stub


@pytest.mark.parametrize("engine, words", [
    (Overwrites, "add them up (+=)"), (ForwardOrder, "topological order")])
def test_the_scalar_engine_check_names_what_breaks(engine, words):
    assert checks.check_scalar_engine(Engine).passed
    assert "NOT ATTEMPTED" in str(checks.check_scalar_engine(StubEngine))
    report = checks.check_scalar_engine(engine)
    assert not report.passed and report.lines[-1].name == "diagnosis"
    assert words in report.lines[-1].detail


def test_the_linear_function_check_wants_none_for_skipped_gradients():
    class AlwaysEverything(torch.autograd.Function):
        @staticmethod
        def forward(X, W, b=None):
            return X @ W if b is None else X @ W + b

        @staticmethod
        def setup_context(ctx, inputs, output):
            ctx.save_for_backward(*inputs[:2])
            ctx.has_bias = len(inputs) > 2

        @staticmethod
        def backward(ctx, G):
            X, W = ctx.saved_tensors
            return G @ W.T, X.T @ G, G.sum(0) if ctx.has_bias else None

    report = checks.check_linear_function(AlwaysEverything)
    failed = report.failed_names()
    assert failed == ["grad_input (input needs no gradient)", "grad_weight (frozen weight, no bias)"]
    assert "needs_input_grad says no one needs it" in str(report)
