"""The checks the graded assignments add to ``course_lib.checks``: right code passes, wrong code is
named, and fresh seeds mean fresh shapes (so hard-coded answers fail)."""

import pytest
import torch

from course_lib import Linear_Layer
from course_lib.checks import (
    check_evaluate_accuracy, check_gradients, check_linear_random, check_train_epoch,
)
from course_lib.checks.assignments import _random_linear_cases


def linear_function(grad_weight_fn):
    """A Linear Function whose weight gradient is ``grad_weight_fn(input, grad_output)``."""

    class Student(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, w, b=None):
            ctx.save_for_backward(x, w)
            ctx.has_bias = b is not None
            return x @ w + b if b is not None else x @ w

        @staticmethod
        def backward(ctx, g):
            x, w = ctx.saved_tensors
            return g @ w.t(), grad_weight_fn(x, g), g.sum(0) if ctx.has_bias else None

    return Student


def test_random_linear_passes_a_correct_function():
    report = check_linear_random(Linear_Layer, seed=7)
    assert report.passed
    outputs = [line.name for line in report.lines if line.name.startswith("output")]
    assert len(outputs) == 3 and sum("no bias" in name for name in outputs) == 1
    # one finite-difference line per input: input, weight and bias, or input and weight
    assert len(report.lines) == 3 + 3 + 2 + 3


def test_random_linear_names_the_input_whose_gradient_is_wrong():
    report = check_linear_random(linear_function(lambda x, g: 0.5 * x.t() @ g), seed=7)
    failed = report.failed_names()
    assert failed and all(name.startswith("gradient of weight") for name in failed)
    assert "backward disagrees with finite differences of forward by" in str(report)
    assert "Jacobian" not in str(report) and "numerical" not in str(report)
    assert all(line.passed for line in report.lines if line.name.startswith("output"))


def test_random_linear_reports_a_transposed_gradient_in_course_terms():
    # with a square weight the shape is right and only the values are wrong: skip those cases
    report = check_linear_random(linear_function(lambda x, g: (x.t() @ g).t()), seed=3)
    assert not report.passed
    assert "grad_weight has shape (9, 8), expected (8, 9): transposed?" in str(report)
    assert "invalid gradient at index" not in str(report)


def test_random_linear_reports_forward_errors_without_crashing():
    class Broken(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, w, b=None):
            raise NotImplementedError()

        @staticmethod
        def backward(ctx, g):
            raise NotImplementedError()

    report = check_linear_random(Broken, seed=1)
    assert len(report.lines) == 3 and not any(line.passed for line in report.lines)
    assert all("raised NotImplementedError" in line.detail for line in report.lines)


def test_random_linear_shapes_follow_the_seed():
    shapes = lambda seed: [(x.shape, w.shape, b is None) for _, x, w, b in _random_linear_cases(seed, 3)]
    assert shapes(5) == shapes(5)
    assert len({tuple(shapes(seed)) for seed in range(6)}) > 1
    cases = _random_linear_cases(5, 4)
    assert cases[0][1].shape[0] == 1  # always a batch of one
    assert [b is None for *_, b in cases] == [False, True, False, True]
    assert all(x.dtype == torch.float64 for _, x, _, _ in cases)


def test_random_linear_needs_a_function_class():
    with pytest.raises(TypeError, match="expected a torch.autograd.Function class"):
        check_linear_random(lambda x, w, b: x @ w)


def reference(sizes=(3, 3, 3, 3)):
    return {f"{kind}{i}": torch.randn(sizes[i - 1] if kind == "weight" else sizes[i],
                                      *((sizes[i],) if kind == "weight" else ()), dtype=torch.float64)
            for i in (1, 2, 3) for kind in ("weight", "bias")}


def test_gradients_pass_when_equal():
    expected = reference((2, 3, 5, 1))
    report = check_gradients({k: v.clone() for k, v in expected.items()}, expected)
    assert report.passed and len(report.lines) == 6
    assert [line.name for line in report.lines] == list(expected)


def test_gradients_name_a_gradient_given_to_the_wrong_layer():
    expected = reference()
    got = dict(expected, weight2=expected["weight3"], weight3=expected["weight2"])  # swapped
    report = check_gradients(got, expected)
    assert report.failed_names() == ["weight2", "weight3"]
    text = str(report)
    assert "It equals the gradient of weight3" in text and "It equals the gradient of weight2" in text


def test_gradients_report_shape_missing_extra_and_wrong_type():
    expected = reference((2, 3, 5, 1))
    got = {k: v for k, v in expected.items() if k != "bias1"}
    got["weight2"] = expected["weight2"].t()
    got["w1"] = expected["weight1"]
    report = check_gradients(got, expected)
    assert set(report.failed_names()) == {"bias1", "weight2", "w1"}
    text = str(report)
    assert "FAIL  bias1    missing: return a gradient for every parameter" in text
    assert "shape (5, 3), expected (3, 5) (transposed?)" in text
    assert "unexpected key" in text
    assert not check_gradients([1, 2], expected).passed
    assert "expected a dict with keys weight1, bias1" in str(check_gradients([1, 2], expected))


def good_train_epoch(model, batches, optimizer, mode=True):
    model.train(mode)
    total = samples = 0
    for x, y in batches:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        total, samples = total + loss.item() * len(y), samples + len(y)
    return total / samples


def test_train_epoch_passes_a_correct_loop():
    report = check_train_epoch(good_train_epoch, seed=3)
    assert report.passed
    assert [line.name for line in report.lines[:3]] == ["training mode", "batches", "loss returned"]
    assert "the mean over all 21 samples" in str(report)


def test_train_epoch_names_missing_zero_grad_and_batch_mean_loss():
    def forgets_zero_grad(model, batches, optimizer):
        model.train()
        losses = []
        for x, y in batches:
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()  # gradients pile up from batch to batch
            optimizer.step()
            losses.append(loss.item())
        return sum(losses) / len(losses)  # a mean of batch means

    report = check_train_epoch(forgets_zero_grad)
    failed = report.failed_names()
    assert "loss returned" in failed and "fc1.weight" in failed and "training mode" not in failed
    assert "weight each batch's mean loss by its size" in str(report)
    assert "optimizer.zero_grad()" in str(report)


def test_train_epoch_names_eval_mode_and_a_crash():
    def in_eval_mode(model, batches, optimizer):
        return good_train_epoch(model, batches, optimizer, mode=False)

    report = check_train_epoch(in_eval_mode)  # the test model halves its logits in eval mode
    assert report.failed_names()[:2] == ["training mode", "loss returned"] and "fc1.weight" in report.failed_names()
    assert "call model.train() first" in str(report)

    def crashes(model, batches, optimizer):
        raise NotImplementedError()

    report = check_train_epoch(crashes)
    assert report.failed_names() == ["train_epoch"] and "raised NotImplementedError" in str(report)


def test_train_epoch_never_contradicts_itself():
    report = check_train_epoch(lambda model, batches, optimizer: 0.0)  # never runs the model
    text = str(report)
    assert "FAIL  training mode" in text and "the model never ran" in text
    assert "model.train() was called" not in text
    assert "unchanged: call optimizer.step()" in text


def test_train_epoch_names_parameters_left_unchanged():
    def no_step(model, batches, optimizer):
        model.train()
        total = 0.0
        for x, y in batches:
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            total += loss.item() * len(y)
        return total / 21

    report = check_train_epoch(no_step)
    assert report.failed_names() == ["loss returned", "parameters"]  # later batches saw other weights
    assert "unchanged: call optimizer.step() after loss.backward()" in str(report)


def good_accuracy(model, batches):
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in batches:
            correct += (model(x).argmax(1) == y).sum().item()
            total += len(y)
    return correct / total


def test_evaluate_accuracy_passes_a_correct_count():
    report = check_evaluate_accuracy(good_accuracy)
    assert report.passed
    assert "0.6667 (12 of 18 correct)" in str(report)


@pytest.mark.parametrize("wrong, hint", [
    (lambda m, b: sum((m(x).argmax(1) == y).float().mean().item() for x, y in b) / 3,
     "A mean of the batch accuracies"),
    (lambda m, b: sum((m(x).argmax(1) == y).sum().item() for x, y in b), "A count"),
    (lambda m, b: 100 * good_accuracy(m, b), "A percentage"),
])
def test_evaluate_accuracy_names_the_usual_mistakes(wrong, hint):
    report = check_evaluate_accuracy(wrong)
    assert "accuracy" in report.failed_names()
    assert hint in str(report)


def test_evaluate_accuracy_needs_eval_mode_and_no_grad():
    def in_train_mode(model, batches):
        correct = total = 0
        for x, y in batches:
            correct += (model(x).argmax(1) == y).sum().item()
            total += len(y)
        return correct / total

    report = check_evaluate_accuracy(in_train_mode)  # the test model predicts otherwise in that mode
    assert report.failed_names() == ["accuracy", "eval mode", "no gradients"]
    assert "predicts otherwise in training mode or with gradients on" in str(report)
    assert "call model.eval() first" in str(report) and "torch.no_grad()" in str(report)
