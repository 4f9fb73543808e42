"""``course_lib.checks.backprop``: right answers pass, each classic mistake is named, stubs are
reported as NOT ATTEMPTED."""

import itertools

import pytest
import torch
import torch.nn.functional as F

from course_lib import NeuralNet, checks
from course_lib.checks.backprop import MISTAKES, _step_variant, mlp_gradients
from course_lib.manual import ManualMLP, cross_entropy_backward


def stub(*args):
    raise NotImplementedError


def smoothed_backward(logits, labels, smoothing):
    target = torch.full_like(logits, smoothing / logits.shape[1])
    target[torch.arange(len(labels)), labels] += 1 - smoothing
    return (torch.softmax(logits, dim=1) - target) / logits.shape[0]


@pytest.mark.parametrize("check", [checks.check_cross_entropy_backward, checks.check_manual_step])
def test_an_untouched_stub_is_not_attempted(check):
    report = check(stub)
    assert not report and len(report.lines) == 1
    assert "[NOT ATTEMPTED]" in report.title and "NOT ATTEMPTED: it still raises NotImplementedError" in str(report)


def test_cross_entropy_backward_right_and_wrong():
    assert checks.check_cross_entropy_backward(smoothed_backward)
    text = str(checks.check_cross_entropy_backward(lambda z, y, s: cross_entropy_backward(z, y)))
    assert "3 of 5 correct" in text and "smoothing the target is no longer one-hot" in text

    def naive_sum(z, y, s):  # no log-sum-exp, no / B
        return z.exp() / z.exp().sum(1, keepdim=True) - F.one_hot(y, z.shape[1])
    text = str(checks.check_cross_entropy_backward(naive_sum))
    assert "PASS  dL/dlogits (batch of 1)" in text  # B = 1 cannot show a missing / B
    assert "FAIL  dL/dlogits (batch of 8, 10 classes)" in text and "8 times too large" in text
    assert "contains NaN or inf: exp overflowed" in text

    text = str(checks.check_cross_entropy_backward(lambda z, y, s: torch.softmax(z, 1) / len(y)))
    assert "each row of dL/dlogits sums to 0, but yours sum to e.g. 0.125" in text


def test_cross_entropy_backward_that_raises_or_returns_junk():
    def broken(z, y, s):
        raise IndexError("index 10 is out of bounds")
    report = checks.check_cross_entropy_backward(broken)
    assert len(report.lines) == 5 and "raised IndexError: index 10 is out of bounds" in str(report)
    assert "returned None" in str(checks.check_cross_entropy_backward(lambda z, y, s: None))


def student_step(mistakes):
    """An independent hand-written step of the MLP that makes the given mistakes."""

    def step(params, x, labels, lr):
        acts = [x.flatten(1)]
        for k in (1, 2):
            acts.append(torch.relu(acts[-1] @ params[f"weight{k}"] + params[f"bias{k}"]))
        logits = acts[-1] @ params["weight3"] + params["bias3"]
        grad = logits.softmax(dim=1)
        if "no_onehot" not in mistakes:
            grad[torch.arange(len(labels)), labels] -= 1
        if "no_mean" not in mistakes:
            grad /= len(labels)
        grads = {}
        for k in (3, 2, 1):
            w = params[f"weight{k}"]
            grads[f"weight{k}"], grads[f"bias{k}"] = acts[k - 1].T @ grad, grad.sum(0)
            old_w = w.clone()
            w -= lr * grads[f"weight{k}"]
            params[f"bias{k}"] -= lr * grads[f"bias{k}"]
            if k > 1:
                grad = (grad @ (w if "updated_weights" in mistakes else old_w).T) * (acts[k - 1] > 0)
        return grads

    return step


@pytest.mark.parametrize("mistakes", [c for n in (1, 2, 3) for c in itertools.combinations(MISTAKES, n)])
def test_manual_step_names_each_mistake(mistakes):
    report = checks.check_manual_step(student_step(mistakes))
    assert not report
    diagnosis = report.lines[-1]
    assert diagnosis.name == "diagnosis"
    assert diagnosis.detail == "; ".join(MISTAKES[m] for m in mistakes)
    if mistakes == ("updated_weights",):  # the last layer's gradient is still right
        assert report.failed_names()[0] == "dL/dweight2"


def test_manual_step_passes_a_right_step_and_the_variants_match_autograd():
    assert checks.check_manual_step(student_step(()))
    g = torch.Generator().manual_seed(1)
    params = {"weight1": torch.randn(5, 4, generator=g, dtype=torch.float64), "bias1": torch.randn(4, generator=g, dtype=torch.float64),
              "weight2": torch.randn(4, 3, generator=g, dtype=torch.float64), "bias2": torch.randn(3, generator=g, dtype=torch.float64),
              "weight3": torch.randn(3, 2, generator=g, dtype=torch.float64), "bias3": torch.randn(2, generator=g, dtype=torch.float64)}
    x, labels = torch.randn(6, 5, generator=g, dtype=torch.float64), torch.tensor([0, 1, 1, 0, 1, 0])
    grads, _ = _step_variant(params, x, labels, 0.1)
    expected = mlp_gradients(params, x, labels)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, expected[name])


def test_manual_step_that_updates_nothing_or_returns_junk():
    def no_update(params, x, labels, lr):
        return student_step(())({n: p.clone() for n, p in params.items()}, x, labels, lr)
    report = checks.check_manual_step(no_update)
    assert report.failed_names() == [f"{n} after the step" for n in ("weight3", "bias3", "weight2", "bias2", "weight1", "bias1")]
    assert "diagnosis" not in str(report)
    assert "expected a dict keyed by weight3, bias3" in str(checks.check_manual_step(lambda *a: [1, 2]))


def test_mlp_gradients_check_on_manual_mlp_and_a_missing_relu_mask():
    torch.manual_seed(0)
    mlp = ManualMLP(dtype=torch.float64)
    images, labels = torch.randn(5, 784, dtype=torch.float64), torch.tensor([0, 1, 2, 3, 9])
    got = mlp.backward(cross_entropy_backward(mlp.forward(images), labels))
    report = checks.check_mlp_gradients(got, mlp.params, images, labels)
    assert report and len(report.lines) == 11
    got["z2"] = got["h2"]  # forgot the ReLU
    report = checks.check_mlp_gradients(got, mlp.params, images, labels)
    assert report.failed_names() == ["dL/dz2"] and "passes dL/dh2 on where z2 > 0" in str(report)
    only_weights = {n: got[n] for n in ("weight1", "bias1")}
    assert len(checks.check_mlp_gradients(only_weights, mlp.params, images, labels).lines) == 2
    assert not checks.check_mlp_gradients(None, mlp.params, images, labels)


def test_mlp_gradient_hints_name_the_right_formula_for_weights_and_biases():
    """A wrong bias gradient is told about summing over rows (not about a weight's shape), a
    right-shaped wrong weight gradient about its product; an unsummed bias about its shape."""
    torch.manual_seed(0)
    mlp = ManualMLP(dtype=torch.float64)
    images, labels = torch.randn(5, 784, dtype=torch.float64), torch.tensor([0, 1, 2, 3, 9])
    got = mlp.backward(cross_entropy_backward(mlp.forward(images), labels))
    wrong = {"bias2": got["bias2"] / 5, "weight1": got["weight1"] * 2, "bias3": got["logits"]}
    report = checks.check_mlp_gradients(wrong, mlp.params, images, labels)
    assert sorted(report.failed_names()) == ["dL/dbias2", "dL/dbias3", "dL/dweight1"], str(report)
    text = str(report)
    assert "dL/dbias2 sums dL/dz2 over the batch's rows" in text
    assert "dL/dweight1 = (layer 1's input)^T @ dL/dz1" in text
    assert "shape (5, 10), expected (10,)" in text and "dL/dbias3 sums dL/dlogits" in text
    assert "weight's shape" not in text


def test_mlp_gradients_is_autograd_on_the_course_model():
    torch.manual_seed(0)
    net = NeuralNet().double()
    images, labels = torch.randn(4, 1, 28, 28, dtype=torch.float64), torch.tensor([3, 1, 4, 1])
    F.cross_entropy(net(images), labels, reduction="sum").backward()
    params = {f"{kind}{k}": getattr(getattr(net, f"fc{k}"), kind) for k in (1, 2, 3) for kind in ("weight", "bias")}
    expected = mlp_gradients(params, images, labels, reduction="sum")
    for name, p in params.items():
        torch.testing.assert_close(expected[name], p.grad)


def test_cross_entropy_backward_without_smoothing_calls_fn_with_two_arguments():
    report = checks.check_cross_entropy_backward(cross_entropy_backward, seed=3, smoothing=False)
    assert report and len(report.lines) == 3 and "smoothing" not in str(report)
    assert "NOT ATTEMPTED" in str(checks.check_cross_entropy_backward(stub, smoothing=False))
