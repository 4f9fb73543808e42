"""Tests of course_lib/checks/training.py: an SGD update by hand, one optimizer step."""

import torch
import torch.nn.functional as F

from course_lib.checks import check_sgd_update, check_train_step


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
    assert len(report.failed_names()) == 6 and "moved along the gradient" in str(report)

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
