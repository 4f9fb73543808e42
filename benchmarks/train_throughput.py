"""Training throughput (samples per second), three pipelines side by side in one run.

    (a) classic  the source lesson's style: a Dataset making one PIL image per sample,
                 ``ToTensor`` + ``Normalize``, a shuffling ``DataLoader``, batch 64
    (b) fast     ``course_lib.datasets``' fast path (the split on the device as one tensor, batches
                 by a seeded permutation) + ``NeuralNet`` built from the custom ``Linear``
    (c) fast     the same fast path + the same network built from ``torch.nn.Linear``

(a), (b) and (c) do the same work per sample: no augmentation, as in the source lesson. A fourth
row per batch size, "(b) + shift", is (b) with the one-pixel shift that ``make train`` applies
by default (``TrainConfig.shift``): one more copy of every batch, the speed training really runs
at. All train with ``course_lib.train.train_epoch`` and the default optimizer (SGD, Nesterov
momentum; a constant learning-rate schedule, stepped per batch like the cosine one), so only the
data path and the layer differ. The contenders are interleaved round by round, alternating who
goes first (a noisy neighbour slows all alike); the best round (the speed when nothing else ran)
and the median round are reported, ratios from the best rounds.
Targets on a 2-core CPU: (b) at batch 512 >= 20x (a); (b) within 10% of (c); (b) >= 200,000
samples/s at batch 512.

Usage:
    python benchmarks/train_throughput.py [--dataset fashion-mnist] [--device cpu|cuda]
                                          [--batches 64 512 4096] [--rounds 15]
                                          [--min-seconds 0.25] [--threads N] [--quick]
"""

import argparse
import itertools
import platform
import statistics

import torch
from timing import interleave, samples_per_second, sync

from course_lib.config import TrainConfig, make_optimizer
from course_lib.datasets import classic_loader, load_data, load_raw
from course_lib.models import NeuralNet
from course_lib.train import resolve_device, train_epoch

SAMPLES_PER_CALL = 8192  # one timed call trains on about this many samples


def with_torch_linear(model: NeuralNet) -> NeuralNet:
    """The same network, its three layers replaced by ``torch.nn.Linear`` with equal weights."""
    for name in ("fc1", "fc2", "fc3"):
        setattr(model, name, getattr(model, name).to_torch())
    return model


def endless(epoch):
    """Batches from ``epoch()`` (an iterable of one epoch's batches), epoch after epoch."""
    return itertools.chain.from_iterable(epoch() for _ in itertools.count())


def contender(batches, model, batch_size, device):
    """A function that trains ``model`` on about SAMPLES_PER_CALL samples; returns how many."""
    steps = max(1, SAMPLES_PER_CALL // batch_size)
    # The default optimizer and a scheduler stepped after every batch, as in training; the
    # constant schedule costs the same per step as the cosine one, and a benchmark has no
    # run length for the cosine to run down over.
    config = TrainConfig(batch_size=batch_size, schedule="constant")
    optimizer, scheduler = make_optimizer(config, model, steps)

    def call():
        _, _, samples = train_epoch(model, itertools.islice(batches, steps), optimizer, scheduler)
        sync(device)
        return samples
    return call


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion-mnist",
                        help="any course_lib dataset name (default fashion-mnist: MNIST's shape)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds (default 15)")
    parser.add_argument("--min-seconds", type=float, default=0.25,
                        help="length of one contender's timed round (default 0.25)")
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 512, 4096],
                        help="fast-path batch sizes (default 64 512 4096)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice, one per core)")
    parser.add_argument("--quick", action="store_true", help="2 rounds of 0.1 s, a smoke run")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.rounds, args.min_seconds = 2, 0.1
    device = resolve_device(args.device)
    raw = load_raw(args.dataset)
    data = load_data(raw=raw, device=device)
    name = torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"torch {torch.__version__}, device {device} ({name}), threads {torch.get_num_threads()}, "
          f"data {data.name} ({len(data.train)} training images), rounds {args.rounds} x "
          f"{args.min_seconds}s")

    torch.manual_seed(0)
    initial = NeuralNet(128).state_dict()

    def model(torch_linear=False):
        m = NeuralNet(128)
        m.load_state_dict(initial)
        return (with_torch_linear(m) if torch_linear else m).to(device)

    loader = classic_loader(raw.train_images, raw.train_labels, (data.mean, data.std),
                            batch_size=64)
    classic = ((x.to(device), y.to(device)) for x, y in endless(lambda: loader))
    calls = {("(a) classic DataLoader+ToTensor", "custom Linear", 64, 0):
             contender(classic, model(), 64, device)}
    for batch in args.batches:
        for pipeline, layer, shift in (("(b) fast path", "custom Linear", 0),
                                       ("(c) fast path", "torch.nn.Linear", 0),
                                       ("(b) + shift", "custom Linear", TrainConfig().shift)):
            generator = torch.Generator(device=device).manual_seed(0)
            fast = endless(lambda b=batch, g=generator, s=shift: data.train.batches(b, g, shift=s))
            calls[(pipeline, layer, batch, shift)] = contender(fast, model(layer != "custom Linear"),
                                                              batch, device)
    for call in calls.values():
        call()  # warm up: the first calls allocate
    rates = interleave(calls, args.rounds, lambda call: samples_per_second(call, args.min_seconds))
    best = {name: max(r) for name, r in rates.items()}
    median = {name: statistics.median(r) for name, r in rates.items()}

    base = next(iter(best.values()))
    n_train = len(data.train)
    print(f"\n| pipeline | layer | batch | shift (px) | best samples/s | median samples/s | "
          f"best x (a) | epoch of {n_train} (s, best) |")
    print("|---|---|--:|--:|--:|--:|--:|--:|")
    for key, rate in best.items():
        pipeline, layer, batch, shift = key
        print(f"| {pipeline} | {layer} | {batch} | {shift} | {rate:,.0f} | {median[key]:,.0f} "
              f"| {rate / base:.1f} | {n_train / rate:.3f} |")
    print()
    shift = TrainConfig().shift
    for batch in args.batches:
        b, c, s = (("(b) fast path", "custom Linear", batch, 0), ("(c) fast path", "torch.nn.Linear", batch, 0),
                   ("(b) + shift", "custom Linear", batch, shift))
        print(f"batch {batch}: (b)/(a) = {best[b] / base:.1f}x, (b)/(c) = {best[b] / best[c]:.3f} "
              f"(medians: {median[b] / median[c]:.3f}), (b) = {best[b]:,.0f} samples/s, "
              f"epoch {1000 * n_train / best[b]:.1f} ms; with the {shift}-pixel shift "
              f"{best[s]:,.0f} samples/s, epoch {1000 * n_train / best[s]:.1f} ms")

if __name__ == "__main__":
    main()
