"""What a call into the sandbox sends back about its arguments, and what the grader does with it
(``harness.snapshot``/``state_after`` in the sandbox, ``proxies.mirror`` in the grader): a tensor or
dict entry the call left as it was is not sent (the grader keeps its own), everything the call
changed is, and nothing the sandbox claims can add to or change the grader's objects beyond what
it sends."""

import torch

from grader.harness import dumps, loads_plain, snapshot, state_after
from grader.proxies import mirror


def call_in_sandbox(fn, *grader_args):
    """``fn`` run as the sandbox runs a student's function: on copies that crossed the wire,
    answered by ``state_after``; returns the reply as the grader loads it."""
    args = loads_plain(dumps(list(grader_args)))
    before = [dict(arg) if isinstance(arg, dict) else None for arg in args]
    snaps = snapshot(args)
    fn(*args)
    reply = {"args": state_after(args, snaps),
             "same": [[k for k, v in arg.items() if k in old and old[k] is v] if isinstance(arg, dict) else None
                      for arg, old in zip(args, before)]}
    return loads_plain(dumps(reply))


def params():
    g = torch.Generator().manual_seed(0)
    return {"W": torch.randn(50, 40, generator=g), "b": torch.randn(40, generator=g)}


def test_a_call_that_changes_nothing_sends_no_tensor_back_and_the_grader_keeps_its_own():
    p, x = params(), torch.randn(3, 50)
    objects, values = dict(p), {k: v.clone() for k, v in p.items()}
    reply = call_in_sandbox(lambda p, x: (p["W"] @ p["b"], x.sum()), p, x)
    assert reply["args"][0] == {"entries": {}, "unchanged": ["W", "b"]}
    assert reply["args"][1] is None
    assert len(dumps(reply)) < 500  # no tensor's bytes (W alone is 8,000)
    mirror([p, x], reply["args"], reply["same"])
    assert all(p[k] is objects[k] and torch.equal(p[k], values[k]) for k in p)


def test_what_the_call_changed_in_place_is_sent_and_mirrored():
    p, grads = params(), {"W": torch.ones(50, 40), "b": torch.ones(40)}
    W = p["W"]

    def sgd_step(p, grads):
        p["W"].sub_(0.1 * grads["W"])  # in place: sent
        p["b"].mul_(2.0).div_(2.0)  # changed and changed back (exactly): the same values, not sent

    expected = p["W"] - 0.1
    reply = call_in_sandbox(sgd_step, p, grads)
    assert list(reply["args"][0]["entries"]) == ["W"] and reply["args"][0]["unchanged"] == ["b"]
    mirror([p, grads], reply["args"], reply["same"])
    assert p["W"] is W and torch.equal(p["W"], expected)  # updated in place, as the student did


def test_a_replaced_a_new_and_a_deleted_entry_are_mirrored():
    p = params()

    def rebuild(p):
        p["W"] = p["W"].clone()  # a new object with the same values: a replacement, sent
        p["extra"] = torch.zeros(2)
        del p["b"]

    W = p["W"]
    reply = call_in_sandbox(rebuild, p)
    assert set(reply["args"][0]["entries"]) == {"W", "extra"} and reply["args"][0]["unchanged"] == []
    mirror([p], reply["args"], reply["same"])
    assert set(p) == {"W", "extra"} and p["W"] is not W and torch.equal(p["W"], W)


def test_a_nan_counts_as_changed_and_a_changed_tensor_argument_is_copied_back():
    x, y = torch.tensor([float("nan"), 1.0]), torch.zeros(3)

    def touch(x, y):
        y.add_(2.0)

    reply = call_in_sandbox(touch, {"x": x}, y)
    assert list(reply["args"][0]["entries"]) == ["x"]  # NaN != NaN: sent, harmlessly
    assert torch.equal(reply["args"][1], torch.full((3,), 2.0))
    mirror([{"x": x}, y], reply["args"], reply["same"])
    assert torch.equal(y, torch.full((3,), 2.0))


def test_a_forged_unchanged_list_adds_nothing_and_changes_nothing():
    p = params()
    values = {k: v.clone() for k, v in p.items()}
    forged = [{"entries": {}, "unchanged": ["W", "b", "not_there", 7, ["x"]]}]
    mirror([p], forged, [None])
    assert set(p) == {"W", "b"} and all(torch.equal(p[k], values[k]) for k in p)
    mirror([p], [{"entries": {}, "unchanged": "W"}], [None])  # not a list: nothing is kept
    assert p == {}
