"""The benchmarks' one way to time code.

Wait for the device before reading the clock (``sync``), time enough calls to last a while
(``time_per_call``, ``samples_per_second``), and measure the contenders interleaved round by
round, who goes first alternating, so that a noisy neighbour slows them all alike
(``interleave``, ``compare``). Ratios are taken between contenders of the same run.
"""

import statistics
import time

import torch


def sync(device) -> None:
    """Wait until ``device`` has finished the work queued on it (CUDA runs asynchronously)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_per_call(fn, device, min_seconds: float) -> float:
    """Seconds per call of ``fn``, timed over enough calls to last about ``min_seconds``."""
    fn()
    sync(device)
    n = 1
    while True:
        start = time.perf_counter()
        for _ in range(n):
            fn()
        sync(device)
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return elapsed / n
        n = max(n * 2, int(n * min_seconds / max(elapsed, 1e-9)) + 1)


def samples_per_second(call, min_seconds: float) -> float:
    """The rate of ``call()`` (which returns how many samples it processed, once the device has
    finished them), over enough calls to last at least ``min_seconds``."""
    samples, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < min_seconds or samples == 0:
        samples += call()
    return samples / elapsed


def interleave(contenders: dict, rounds: int, measure) -> dict:
    """``{name: [measure(contender) for each round]}``, the contenders measured one after the
    other in every round, the order reversed each round so that none always follows another."""
    results = {name: [] for name in contenders}
    order = list(contenders)
    for _ in range(rounds):
        for name in order:
            results[name].append(measure(contenders[name]))
        order.reverse()
    return results


def compare(fns: dict, device, rounds: int, min_seconds: float) -> dict:
    """Each contender's ``(median, best)`` seconds per call, the contenders interleaved.

    The median is the typical round; the best round is the one least disturbed by whatever else
    the machine was doing, so the ratio of the best rounds is the steadier estimate of the cost
    that belongs to the code itself.
    """
    seconds = interleave(fns, rounds, lambda fn: time_per_call(fn, device, min_seconds))
    return {name: (statistics.median(s), min(s)) for name, s in seconds.items()}
