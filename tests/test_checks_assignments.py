"""The checks the graded assignments add to ``course_lib.checks``: right code passes, wrong code is
named, and fresh seeds mean fresh shapes (so hard-coded answers fail)."""

import pytest
import torch

from course_lib import Linear_Layer
from course_lib.checks import check_evaluate_accuracy, check_gradients, check_linear_random, check_train_epoch
from course_lib.checks.assignments import (
    _random_linear_cases,
    check_linear_out_in_backward,
    check_linear_out_in_forward,
    check_mlp_layer,
    check_sgd_step_dict,
    check_sigmoid_cross_entropy_backward,
    check_top_k_accuracy,
    check_train_epoch_accumulate,
)


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
    assert report.failed_names() == ["parameters", "loss returned"]  # the cause first
    assert "unchanged: call optimizer.step() after loss.backward()" in str(report)
    assert "weight each batch's mean loss" not in str(report) and "the model never trained" in str(report)


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


# --- the redesigned assignments' checks: inputs are the grader's, references its own snapshots ---

F = torch.nn.functional


def out_in_linear(grad_weight=lambda x, g: g.t() @ x, tamper=False):
    """A Linear Function in nn.Linear's layout; ``tamper`` zeroes its inputs after the forward."""

    class Student(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, w, b=None):
            ctx.save_for_backward(x.clone(), w.clone(), b)
            y = x @ w.t() + (b if b is not None else 0)
            if tamper:
                x.zero_(), w.zero_()
            return y

        @staticmethod
        def backward(ctx, g):
            x, w, b = ctx.saved_tensors
            return g @ w, grad_weight(x, g), g.sum(0) if b is not None else None

    return Student


def test_out_in_linear_passes_a_correct_layer_on_fixed_and_random_shapes():
    for seed in (0, 5):
        assert check_linear_out_in_forward(out_in_linear(), seed=seed).passed
        report = check_linear_out_in_backward(out_in_linear(), seed=seed)
        assert report.passed and len(report.lines) == 9 + 4


def test_out_in_linear_names_a_transposed_weight_gradient_and_the_course_layout():
    assert not check_linear_out_in_forward(Linear_Layer).passed  # the lessons' (in, out) layout
    report = check_linear_out_in_backward(out_in_linear(lambda x, g: x.t() @ g))
    detail = {line.name: line.detail for line in report.lines}["grad_weight (batch of 4)"]
    assert detail.startswith("shape (5, 3), expected (3, 5) (transposed?)")
    assert all(not name.startswith(("grad_input", "grad_bias")) for name in report.failed_names())


def test_out_in_linear_references_do_not_see_what_the_student_did_to_its_inputs():
    assert check_linear_out_in_forward(out_in_linear(tamper=True)).passed
    assert check_linear_out_in_backward(out_in_linear(tamper=True)).passed


def sgd_params(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"weight1": torch.randn(2, 3, generator=g, dtype=torch.float64),
            "bias1": torch.randn(3, generator=g, dtype=torch.float64)}


def honest_step(params, grads, lr):
    with torch.no_grad():
        for name, p in params.items():
            p -= lr * grads[name]


def test_sgd_step_passes_a_correct_step_and_one_that_zeroes_the_gradients_after():
    def then_zeroes(params, grads, lr):  # lesson 4's habit
        honest_step(params, grads, lr)
        for name in params:
            grads[name].zero_()

    for step in (honest_step, then_zeroes):
        report = check_sgd_step_dict(step, sgd_params(), lr=0.1)
        assert report.passed, report
        assert [line.name for line in report.lines] == ["weight1", "bias1", "gradients"]


def test_sgd_step_fails_a_step_that_only_zeroes_the_gradients():
    def zeroes_only(params, grads, lr):
        for name in params:
            grads[name].zero_()

    report = check_sgd_step_dict(zeroes_only, sgd_params(), lr=0.1)
    assert report.failed_names() == ["weight1", "bias1"]
    assert "unchanged: this parameter was never stepped" in str(report)


@pytest.mark.parametrize("step, failed, message", [
    (lambda p, g, lr: p.update({n: v.detach() - lr * g[n] for n, v in p.items()}), ["weight1", "bias1"],
     "updated a copy, not in place"),
    (lambda p, g, lr: (honest_step(p, g, lr), g["bias1"].mul_(2)), ["gradients"],
     "sgd_step changed grads['bias1']: only the parameters should change"),
    (lambda p, g, lr: (honest_step(p, g, lr), p.update(extra=torch.zeros(1))), ["params keys"],
     "sgd_step changed the names in params"),
    (lambda p, g, lr: (honest_step(p, g, lr), honest_step(p, g, lr)), ["weight1", "bias1"], "stepped twice"),
])
def test_sgd_step_names_what_else_changed(step, failed, message):
    report = check_sgd_step_dict(step, sgd_params(), lr=0.1)
    assert report.failed_names() == failed and message in str(report)


def tanh_forward(params, x):
    h1 = torch.tanh(x @ params["weight1"] + params["bias1"])
    h2 = torch.tanh(h1 @ params["weight2"] + params["bias2"])
    return h2 @ params["weight3"] + params["bias3"], {"x": x, "h1": h1, "h2": h2}


def tanh_backward(params, cache, g):
    grads, inputs = {}, {3: cache["h2"], 2: cache["h1"], 1: cache["x"]}
    for k in (3, 2, 1):
        grads[f"weight{k}"], grads[f"bias{k}"] = inputs[k].t() @ g, g.sum(0)
        if k > 1:
            g = (g @ params[f"weight{k}"].t()) * (1 - inputs[k] ** 2)
    return grads


def mlp_batch(seed=0, sizes=(6, 5, 4, 3), n=4):
    g = torch.Generator().manual_seed(seed)
    params = {}
    for k in (1, 2, 3):
        params[f"weight{k}"] = 0.5 * torch.randn(sizes[k - 1], sizes[k], generator=g, dtype=torch.float64)
        params[f"bias{k}"] = torch.randn(sizes[k], generator=g, dtype=torch.float64)
    return params, torch.randn(n, sizes[0], generator=g, dtype=torch.float64), torch.randint(sizes[-1], (n,), generator=g)


def test_mlp_layer_passes_correct_gradients_even_when_backward_also_steps():
    def steps_inside(params, cache, g):  # an honest answer that also updates the weights
        grads = tanh_backward(params, cache, g)
        for name in params:
            params[name] -= 0.1 * grads[name]
        return grads

    for fn in (tanh_backward, steps_inside):
        for layer in (3, 2, 1):
            report = check_mlp_layer(fn, layer, tanh_forward, mlp_batch())
            assert report.passed, report
            assert [line.name for line in report.lines] == [f"weight{layer}", f"bias{layer}"]


def test_mlp_layer_fails_a_backward_that_zeroes_the_parameters_and_crafts_its_answer():
    def zeroes(params, cache, g):
        for p in params.values():
            p.zero_()
        for v in cache.values():
            v.zero_()
        return {name: torch.zeros_like(p) for name, p in params.items()}

    for layer in (3, 2, 1):
        assert check_mlp_layer(zeroes, layer, tanh_forward, mlp_batch()).failed_names() == [f"weight{layer}", f"bias{layer}"]


def test_mlp_layer_names_a_bias_gradient_with_its_own_shape():
    def unsummed_bias(params, cache, g):
        return dict(tanh_backward(params, cache, g), bias2=torch.ones(4, 4, dtype=torch.float64))

    report = check_mlp_layer(unsummed_bias, 2, tanh_forward, mlp_batch())
    assert report.failed_names() == ["bias2"]
    assert report.lines[1].detail == "shape (4, 4), expected (4,) (not summed over the batch?)."
    report = check_mlp_layer(lambda p, c, g: {"weight1": tanh_backward(p, c, g)["weight1"]}, 1, tanh_forward, mlp_batch())
    assert "missing: return bias1's gradient, shape (5,)" in str(report)


def sigmoid_ce_grad(logits, labels):
    return (torch.sigmoid(logits) - F.one_hot(labels, logits.shape[1]).to(logits.dtype)) / logits.shape[0]


@pytest.mark.parametrize("fn, hint", [
    (lambda z, y: sigmoid_ce_grad(z, y) * z.shape[0], "divide by the batch size B"),
    (lambda z, y: (torch.softmax(z, 1) - F.one_hot(y, z.shape[1]).to(z.dtype)) / z.shape[0], "softmax cross-entropy"),
    (lambda z, y: -sigmoid_ce_grad(z, y), "the sign is flipped"),
])
def test_sigmoid_cross_entropy_backward_names_the_usual_mistakes(fn, hint):
    assert check_sigmoid_cross_entropy_backward(sigmoid_ce_grad, seed=4).passed
    report = check_sigmoid_cross_entropy_backward(fn, seed=4)
    assert not report.passed and hint in str(report)


def test_sigmoid_cross_entropy_backward_needs_finite_values_for_large_logits():
    def overflows(logits, labels):
        e = torch.exp(logits)
        return (e / (1 + e) - F.one_hot(labels, logits.shape[1]).to(logits.dtype)) / logits.shape[0]

    report = check_sigmoid_cross_entropy_backward(overflows)
    assert report.failed_names() == ["gradient (logits of +-1000)"] and "NaN or inf" in str(report)


def accumulating_epoch(model, batches, optimizer, accumulate, weigh=True, step=True):
    model.train()
    total = samples = pending = count = 0
    optimizer.zero_grad()
    for x, y in batches:
        loss = F.cross_entropy(model(x), y, reduction="sum")
        loss.backward()
        total, samples, pending, count = total + loss.item(), samples + len(y), pending + len(y), count + 1
        if count == accumulate:
            for p in model.parameters():
                p.grad /= pending if weigh else len(y) * accumulate
            optimizer.step() if step else None
            optimizer.zero_grad()
            pending = count = 0
    if count:
        for p in model.parameters():
            p.grad /= pending if weigh else len(y) * accumulate
        optimizer.step() if step else None
    return total / samples


def test_train_epoch_accumulate_passes_a_correct_loop():
    for accumulate in (1, 2, 3):
        report = check_train_epoch_accumulate(accumulating_epoch, accumulate=accumulate)
        assert report.passed, report
    assert "the mean over all 35 samples" in str(report)


def test_train_epoch_accumulate_fails_stepping_every_batch_or_a_wrong_group_mean():
    every = check_train_epoch_accumulate(lambda m, b, o, a: accumulating_epoch(m, b, o, 1), accumulate=2)
    assert "fc1.weight" in every.failed_names() and "One optimizer.step() per 2 batches" in str(every)
    divided = check_train_epoch_accumulate(lambda m, b, o, a: accumulating_epoch(m, b, o, a, weigh=False), accumulate=2)
    assert "fc3.bias" in divided.failed_names() and "loss returned" not in divided.failed_names()


def test_train_epoch_accumulate_reports_a_missing_step_as_such():
    report = check_train_epoch_accumulate(lambda m, b, o, a: accumulating_epoch(m, b, o, a, step=False))
    assert report.failed_names() == ["parameters", "loss returned"]
    assert "unchanged: call optimizer.step() once per group" in str(report)
    assert "weight each batch's mean loss" not in str(report)


def top_k(model, batches, k, eval_mode=True):
    model.train(not eval_mode)
    hits = seen = 0
    with torch.set_grad_enabled(not eval_mode):
        for x, y in batches:
            hits += (model(x).topk(k, dim=1).indices == y[:, None]).any(1).sum().item()
            seen += len(y)
    return hits / seen


def test_top_k_accuracy_passes_a_correct_count():
    report = check_top_k_accuracy(top_k)
    assert report.passed and "0.4444 (8 of 18 samples)" in str(report)


@pytest.mark.parametrize("wrong, hint", [
    (lambda m, b, k: top_k(m, b, 1), "The top-1 accuracy"),
    (lambda m, b, k: 18 * top_k(m, b, k), "A count"),
    (lambda m, b, k: top_k(m, b, k + 1), "The top-4 accuracy"),
    (lambda m, b, k: 0.4444444444444444, "compute it from the batches and the k given"),
    (lambda m, b, k: top_k(m, b, k, eval_mode=False), "call model.eval() first"),
])
def test_top_k_accuracy_names_the_usual_mistakes(wrong, hint):
    report = check_top_k_accuracy(wrong)
    assert not report.passed and hint in str(report)
