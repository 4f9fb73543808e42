"""Tests of course_lib/checks/training.py: an SGD step by hand, one optimizer step, an accuracy."""

import torch
import torch.nn.functional as F

from course_lib.checks import (
    check_accuracy,
    check_clipped_train_step,
    check_sgd_step,
    check_sgd_update,
    check_train_step,
)


def test_sgd_update_names_each_mistake():
    def right(params, lr):
        with torch.no_grad():
            for p in params:
                p -= lr * p.grad
                p.grad = None

    report = check_sgd_update(right)
    assert report.passed and len(report.lines) == 12

    def rebinds(params, lr):
        for p in params:
            p = p - lr * p.grad  # noqa: PLW2901 (the mistake under test)

    report = check_sgd_update(rebinds)
    text = str(report)
    assert "never stepped" not in text and "rebinds the name p" in text
    assert "weight1" in report.failed_names() and "weight1.grad" in report.failed_names()

    def nothing(params, lr):
        pass

    assert "never stepped" in str(check_sgd_update(nothing))

    def forgot_no_grad(params, lr):
        for p in params:
            p -= lr * p.grad

    assert "raised RuntimeError" in str(check_sgd_update(forgot_no_grad))

    def wrong_sign(params, lr):
        with torch.no_grad():
            for p in params:
                p += lr * p.grad
                p.grad = None

    report = check_sgd_update(wrong_sign)
    assert len(report.failed_names()) == 6 and "stepped uphill: subtract lr * grad" in str(report)

    def twice_and_never(params, lr):  # the source lesson's slip
        with torch.no_grad():
            for i, p in enumerate(params):
                p -= lr * p.grad * (0 if i >= 4 else 2 if i >= 2 else 1)
                p.grad.zero_()

    report = check_sgd_update(twice_and_never)
    assert report.failed_names() == ["weight2", "bias2", "weight3", "bias3"]
    assert "stepped twice" in str(report) and "never stepped" in str(report)


def reference_step(model, x, y, optimizer):
    optimizer.zero_grad()
    loss = F.mse_loss(model(x), y)
    loss.backward()
    optimizer.step()
    return loss.item()


def test_train_step_check():
    before = torch.get_rng_state()
    assert check_train_step(reference_step).passed
    assert torch.equal(before, torch.get_rng_state())  # the caller's random stream is untouched

    def no_zero_grad(model, x, y, optimizer):
        loss = F.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()
        return loss

    report = check_train_step(no_zero_grad)
    assert report.failed_names() == ["parameters after step 2"]
    assert "zero_grad() before backward" in str(report)

    def no_step(model, x, y, optimizer):
        optimizer.zero_grad()
        loss = F.mse_loss(model(x), y)
        loss.backward()
        return loss.item()

    report = check_train_step(no_step)
    assert report.failed_names() == ["parameters after step 1"] and "unchanged" in str(report)

    def returns_nothing(model, x, y, optimizer):
        reference_step(model, x, y, optimizer)

    report = check_train_step(returns_nothing)
    assert report.failed_names() == ["loss returned (step 1)", "loss returned (step 2)"]


def test_sgd_step_check_catches_the_source_lessons_bug():
    torch.manual_seed(0)
    params = {n: torch.randn(3) for n in ("weight1", "weight2", "weight3")}
    grads = {n: torch.randn(3) for n in params}
    lr = 0.1
    after = {
        "weight1": params["weight1"] - lr * grads["weight1"],
        "weight2": params["weight2"] - 2 * lr * grads["weight2"],  # stepped twice
        "weight3": params["weight3"].clone(),  # never stepped
    }
    report = check_sgd_step(params, after, grads, lr)
    text = str(report)
    assert report.failed_names() == ["weight2", "weight3"]
    assert "stepped twice" in text and "never stepped" in text


def test_sgd_step_names_a_copy_and_an_uphill_step():
    params = {n: torch.randn(3) for n in ("w1", "w2")}
    grads = {n: torch.randn(3) for n in params}
    copies = {n: p - 0.1 * grads[n] for n, p in params.items()}  # what `params[n] = p - lr * g` leaves
    report = check_sgd_step(params, params, grads, 0.1, returned=copies)
    assert report.failed_names() == ["w1", "w2"] and "updated a copy, not in place" in str(report)
    uphill = {n: p + 0.1 * grads[n] for n, p in params.items()}
    assert "stepped uphill: subtract lr * grad" in str(check_sgd_step(params, uphill, grads, 0.1))


def test_accuracy_check():
    assert check_accuracy(0.95, 0.9).passed
    report = check_accuracy(0.85, 0.9)
    assert not report.passed and "85.00%, needed at least 90.00%" in str(report)


def clipped_step(clip):
    """A clipped MSE step whose clipping is ``clip(grads, norm, max_norm)``."""
    def step(model, inputs, targets, optimizer, max_norm):
        optimizer.zero_grad()
        loss = F.mse_loss(model(inputs), targets)
        loss.backward()
        grads = [p.grad for p in model.parameters()]
        norm = torch.sqrt(sum((g ** 2).sum() for g in grads))
        clip(grads, norm, max_norm)
        optimizer.step()
        return loss.item(), norm.item()
    return step


def global_clip(grads, norm, max_norm):
    if norm > max_norm:
        for g in grads:
            g.mul_(max_norm / norm)


CLIP_MISTAKES = {  # the mistake -> words its report must hold
    "no clipping": (lambda grads, norm, max_norm: None, "were not scaled: their global norm was"),
    "each tensor on its own": (lambda grads, norm, max_norm: [g.mul_(min(1.0, max_norm / g.norm().item()))
                                                              for g in grads], "clipped on its own"),
    "a small gradient scaled up": (lambda grads, norm, max_norm: [g.mul_(max_norm / norm) for g in grads],
                                   "already within max_norm"),
}


def test_clipped_step_passes_when_right_and_names_each_mistake():
    report = check_clipped_train_step(clipped_step(global_clip))
    assert report.passed and len(report.lines) == 6, str(report)
    for mistake, (clip, words) in CLIP_MISTAKES.items():
        report = check_clipped_train_step(clipped_step(clip))
        assert not report.passed and words in str(report), (mistake, str(report))


def test_clipped_step_wants_the_loss_and_the_norm_before_clipping():
    def returns_norm_after(model, inputs, targets, optimizer, max_norm):
        loss, norm = clipped_step(global_clip)(model, inputs, targets, optimizer, max_norm)
        return loss, min(norm, max_norm)
    report = check_clipped_train_step(returns_norm_after)
    assert report.failed_names() == ["large gradient: norm returned"], str(report)
    report = check_clipped_train_step(lambda *args: clipped_step(global_clip)(*args)[0])
    assert "expected (loss, norm)" in str(report)
