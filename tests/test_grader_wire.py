"""The grader's wire format (``grader/harness.py``: ``pack``, ``dumps``, ``loads_plain``): what
the sandbox sends comes back value for value, and nothing but plain values can come back."""

import os
import pickle
import random
import re

import pytest
import torch

from grader.harness import TENSOR, dumps, loads_plain, pack

DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.complex64, torch.int64,
          torch.int32, torch.int8, torch.uint8, torch.bool]


def make(dtype, shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    if dtype == torch.bool:
        return torch.rand(shape, generator=g) > 0.5
    if dtype.is_floating_point or dtype.is_complex:
        return torch.randn(shape, generator=g, dtype=torch.float64).to(dtype) * 1e3
    return torch.randint(-100 if dtype != torch.uint8 else 0, 100, shape, generator=g).to(dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(), (0,), (3, 0, 2), (5,), (4, 3), (2, 3, 4)], ids=str)
def test_a_tensor_comes_back_bit_for_bit(dtype, shape):
    t = make(dtype, shape)
    back = loads_plain(dumps({"value": t}))["value"]
    assert back.dtype == dtype and back.shape == t.shape and torch.equal(back, t)
    assert not back.requires_grad


def test_views_come_back_as_their_values_and_requires_grad_is_kept():
    base = torch.randn(6, 4, dtype=torch.float64)
    for view in (base.T, base[::2, 1:], base.expand(2, 6, 4)[1], torch.randn(3, dtype=torch.complex64).conj(),
                 -torch.randn(3, 2).T):
        back = loads_plain(dumps(view))
        assert back.is_contiguous() and torch.equal(back, view.resolve_conj().resolve_neg())
    leaf = torch.nn.Parameter(torch.ones(2))
    back = loads_plain(dumps([leaf, torch.arange(3)]))
    assert back[0].requires_grad and type(back[0]) is torch.Tensor and not back[1].requires_grad


def test_extreme_values_and_the_structure_survive():
    t = torch.tensor([float("inf"), -float("inf"), float("nan"), 5e-324, -0.0, 1.7976931348623157e308])
    message = {"event": "result", "value": (t, [1, 2.5, None, True, "x"], {"a": t[:2], 3: ()}), "same": [None]}
    back = loads_plain(dumps(message))
    assert torch.equal(back["value"][0].isnan(), t.isnan())
    assert torch.equal(back["value"][0].nan_to_num(), t.nan_to_num())
    assert back["value"][1:] == ([1, 2.5, None, True, "x"], {"a": back["value"][2]["a"], 3: ()})
    assert isinstance(back["value"], tuple) and torch.signbit(back["value"][0][4])
    assert pack(torch.sparse_coo_tensor([[0, 2]], [1.0, 2.0], (3,), check_invariants=True))[4] == pack(torch.tensor([1.0, 0.0, 2.0]))[4]


class Exploit:
    def __reduce__(self):
        return (os.system, ("echo owned",))


@pytest.mark.parametrize("payload", [
    pickle.dumps(Exploit()),  # a function to call: refused
    pickle.dumps(torch.ones(2)),  # torch's own pickling needs its classes: refused too
    pickle.dumps(Exploit(), protocol=0),
], ids=["os.system", "a torch-pickled tensor", "protocol 0"])
def test_a_reply_that_needs_any_class_or_function_is_refused(payload):
    with pytest.raises(pickle.UnpicklingError, match="is not a plain value"):
        loads_plain(payload)


@pytest.mark.parametrize("packed, words", [
    ((TENSOR, "float64", (2, 2), False, b"\0" * 31), "a tensor of shape (2, 2) and 31 bytes"),
    ((TENSOR, "object", (1,), False, b"\0" * 8), "malformed"),
    ((TENSOR, "float32", (-1,), False, b""), "malformed"),
    ((TENSOR, "float32", [2], False, b"\0" * 8), "malformed"),
    ((TENSOR, "float32", (2,), "yes", b"\0" * 8), "malformed"),
    ((TENSOR, "bool", (2,), False, b"\0\7"), "other than 0 and 1"),
    ((TENSOR, "float32", (10**9, 10**9), False, b"\0" * 8), "a tensor of shape"),
])
def test_a_malformed_packed_tensor_is_refused_with_a_reason(packed, words):
    with pytest.raises(ValueError, match=re.escape(words)):
        loads_plain(pickle.dumps({"value": packed}))


def test_deep_nesting_is_refused_not_a_crash():
    n = 10_000  # pickle.dumps cannot write it: EMPTY_LIST n times, then APPEND each into the one below
    payload = b"\x80\x04" + b"]" * n + b"a" * (n - 1) + b"."
    with pytest.raises(ValueError, match="nested more than"):
        loads_plain(payload)


def test_random_corruptions_of_a_real_reply_give_a_value_or_an_exception():
    frame = bytearray(dumps({"event": "result", "value": {"w": torch.randn(8, 5), "b": torch.zeros(5)},
                             "args": [torch.ones(3)], "same": [["w"]]}))
    rng = random.Random(0)
    outcomes = set()
    for _ in range(500):
        data = bytearray(frame)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        try:
            loads_plain(bytes(data))
            outcomes.add("value")
        except Exception as e:  # noqa: BLE001 (the grader turns any of these into "sent something unreadable")
            outcomes.add(type(e).__name__)
    assert "value" in outcomes and len(outcomes) > 2
