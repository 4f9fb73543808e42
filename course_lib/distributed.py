"""Data-parallel training with ``torch.distributed``: ``torchrun`` starts the processes, DDP keeps them in step.

``torchrun --standalone --nproc_per_node=2 -m course_lib train`` starts two copies of the CLI; each
finds its rank in the environment torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``...), and
``start`` joins them into one process group: ``gloo`` on the CPU, ``nccl`` on CUDA with one GPU per
process (``cuda:LOCAL_RANK``). ``course_lib.train.fit``, handed ``parallel_hooks(group)``, then
trains as one process would, with:

- every rank drawing the same seeded permutation and shifts, and keeping its contiguous share of
  each *global* batch (``DataParallel.batches``): ``--batch-size`` means what it means on one
  process;
- ``DistributedDataParallel`` summing the shares' gradients, each weighted by its share of the
  batch (``DataParallel.wrap``), so a step equals one process's step on the whole batch;
- evaluation sharded over the ranks and combined from all-reduced sums
  (``DataParallel.evaluate``), never a mean of per-rank means;
- a NaN on any rank, or Ctrl-C, stopping them all at the same step (``train_epoch`` checks the
  loss summed over the ranks, ``agree``, every ``check_every`` steps), and only rank 0 writing.

A collective that waits longer than ``$COURSE_DIST_TIMEOUT_S`` seconds (default 30) raises
``ProcessLost``, naming the ranks that stopped answering, instead of hanging.
"""

import dataclasses
import datetime
import os
import re
import signal
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from .train import Hooks, evaluate_split, shuffled_batches

TIMEOUT_ENV = "COURSE_DIST_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 30.0
BACKENDS = ("auto", "gloo", "nccl")
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


class ProcessLost(RuntimeError):
    """Another process of the job died or stopped answering."""


@dataclass(frozen=True)
class Group:
    """This process's place in the job (``rank`` 0 is the one that writes)."""

    rank: int
    world_size: int
    local_rank: int  # the rank among this machine's processes: picks the GPU
    local_world_size: int
    backend: str
    device: torch.device
    timeout_s: float

    @property
    def is_main(self) -> bool:
        return self.rank == 0


_group: Group | None = None
_monitor = None  # a gloo group used only to find out which ranks stopped answering
_ctrl_c = {"pressed": False, "previous": None}  # see _note_ctrl_c


def launched_by_torchrun(environ=None) -> bool:
    """Whether torchrun started this process (``environ``: default ``os.environ``)."""
    environ = os.environ if environ is None else environ
    return all(name in environ for name in TORCHRUN_ENV)


def current() -> Group | None:
    """The process group ``start`` joined, or ``None`` in a plain (single-process) run."""
    return _group


def timeout_s(environ=None) -> float:
    """``$COURSE_DIST_TIMEOUT_S``: how long a collective may wait for the other processes
    (``environ``: default ``os.environ``)."""
    environ = os.environ if environ is None else environ
    text = environ.get(TIMEOUT_ENV, "")
    try:
        value = float(text) if text else DEFAULT_TIMEOUT_S
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise ValueError(f"{TIMEOUT_ENV} must be a positive number of seconds, got {text!r}")
    return value


def plan(device: str, backend: str, environ=None) -> Group:
    """The ``Group`` this process would join; a bad combination is a ``ValueError`` that says
    what to change (found before any process group exists, so before any training).
    ``environ``: torchrun's variables, default ``os.environ``."""
    environ = os.environ if environ is None else environ
    if backend not in BACKENDS:
        raise ValueError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    rank, world, local_rank, local_world = (int(environ[k]) for k in TORCHRUN_ENV[:4])
    device = str(device)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"  # as device.resolve_device
    if device.startswith("cuda:") and local_world > 1:
        raise ValueError(f"--device {device} names one GPU, but torchrun starts {local_world} "
                         "processes on this machine and each needs its own: use --device cuda "
                         "(process i takes cuda:LOCAL_RANK)")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"--device {device}: training on several processes runs on the CPU "
                         "(gloo) or on CUDA GPUs (nccl); use --device cpu or cuda")
    if device.startswith("cuda"):
        gpus = torch.cuda.device_count()
        if gpus == 0:
            raise ValueError(f"--device {device} was asked for, but this machine has no CUDA GPU "
                             "(torch.cuda.is_available() is False); use --device cpu")
        if local_world > gpus:
            raise ValueError(f"torchrun starts {local_world} processes on this machine "
                             f"(--nproc_per_node={local_world}) but it has {gpus} CUDA GPU(s), one "
                             f"per process: use --nproc_per_node={gpus} or less, or --device cpu")
        device = device if ":" in device else f"cuda:{local_rank}"
    chosen = backend if backend != "auto" else ("nccl" if device.startswith("cuda") else "gloo")
    if chosen == "nccl" and not device.startswith("cuda"):
        raise ValueError("--backend nccl runs on CUDA GPUs only, and this run is on the CPU: "
                         "use --backend gloo (or auto), or --device cuda on a machine with GPUs")
    if chosen == "nccl" and not dist.is_nccl_available():
        raise ValueError("--backend nccl: this PyTorch build has no NCCL; use --backend gloo")
    return Group(rank, world, local_rank, local_world, chosen, torch.device(device), timeout_s(environ))


def start(device: str = "auto", backend: str = "auto") -> Group | None:
    """Join the job torchrun launched (``None`` when this process was not started by torchrun)."""
    global _group, _monitor
    if not launched_by_torchrun():
        if backend != "auto":
            raise ValueError(f"--backend {backend} applies to runs on several processes: launch "
                             "with torchrun --nproc_per_node=N -m course_lib train ...")
        return None
    group = plan(device, backend)
    if group.device.type == "cuda":
        torch.cuda.set_device(group.device)
    timeout = datetime.timedelta(seconds=group.timeout_s)
    dist.init_process_group(group.backend, timeout=timeout,
                            device_id=group.device if group.device.type == "cuda" else None)
    _monitor = dist.new_group(backend="gloo", timeout=timeout)
    _group = group
    _ctrl_c.update(pressed=False, previous=signal.signal(signal.SIGINT, _note_ctrl_c))
    return group


def stop() -> None:
    """Leave the process group (every rank, at the end of the run)."""
    global _group, _monitor
    if _ctrl_c["previous"] is not None:
        signal.signal(signal.SIGINT, _ctrl_c["previous"])
        _ctrl_c["previous"] = None
    if dist.is_initialized():
        dist.destroy_process_group()
    _group = _monitor = None


def _note_ctrl_c(signum, frame):
    """Ctrl-C reaches every process at a different point of its step; a process that left at once
    would leave the others waiting in an all-reduce. So it is only noted here, and ``agree``
    stops every process at the same step."""
    _ctrl_c["pressed"] = True


def check_batch_size(batch_size: int, group: Group) -> None:
    """The global batch must split into ``world_size`` equal shares."""
    world = group.world_size
    if batch_size % world:
        lower = max(world, batch_size // world * world)
        raise ValueError(f"--batch-size {batch_size} is the global batch, shared by the {world} "
                         f"processes, so it must be divisible by {world}: try --batch-size {lower} "
                         f"or {lower + world}")


def check_last_batch(batch_size: int, n_train: int, steps: int, group: Group) -> None:
    """The last (short) batch of an epoch must still give every process a sample."""
    world, last = group.world_size, n_train % batch_size
    if 0 < last < world and steps * batch_size >= n_train:
        raise ValueError(f"the last batch of each epoch holds {last} sample(s) ({n_train} training "
                         f"samples, --batch-size {batch_size}), fewer than the {world} processes "
                         "that share it: choose another --batch-size")


# --------------------------------------------------------------------------------------------
# Training: each rank's share of a global batch, gradients weighted by that share
# --------------------------------------------------------------------------------------------


def share(n: int, group: Group) -> slice:
    """This rank's contiguous part of ``n`` items (sizes differ by at most one)."""
    return slice(n * group.rank // group.world_size, n * (group.rank + 1) // group.world_size)


class ShareWeight:
    """The comm hook's state: this rank's fraction of the current global batch."""

    def __init__(self, world_size: int):
        self.value = 1.0 / world_size


def weighted_sum_hook(state: ShareWeight, bucket):
    """DDP comm hook: sum the ranks' gradients, each scaled by its share of the batch.

    Each rank's gradient is of the mean loss over its ``n_r`` samples; ``sum_r (n_r / B) * grad_r``
    is the gradient of the mean over the whole batch of ``B``. DDP's default (divide by the world
    size) is the same thing when every share is equal, and wrong when the last batch splits
    unevenly.
    """
    buffer = bucket.buffer().mul_(state.value)
    return dist.all_reduce(buffer, async_op=True).get_future().then(lambda fut: fut.value()[0])


def parallel_hooks(group: Group) -> Hooks:
    """The ``course_lib.train.Hooks`` that ``fit`` is handed in one process among several that
    torchrun started (``start``): its share of every batch, DDP, the training sums agreed over the
    processes, evaluation summed over them, rank 0 writing."""
    parallel = DataParallel(group, shuffled_batches, evaluate_split)
    return Hooks(batches=parallel.batches, evaluate=parallel.evaluate, wrap=parallel.wrap,
                 agree=lambda loss_sum, correct, samples: agree(loss_sum, correct, samples, group),
                 should_write=group.is_main, processes=describe(group, group.device))


class DataParallel:
    """What ``course_lib.train.Hooks`` needs to train on this process's share of every batch.

    ``global_batches(split, config, generator, steps)`` gives one epoch's global batches, the
    same on every rank (same seed, same permutation, same shifts); ``evaluate(model, split)``
    gives ``(loss, accuracy)`` over a split. Both come from ``course_lib.train``.
    """

    def __init__(self, group: Group, global_batches, evaluate):
        self.group, self._global_batches, self._evaluate = group, global_batches, evaluate
        self.weight = ShareWeight(group.world_size)
        self._ddp = None

    def wrap(self, model: torch.nn.Module) -> DistributedDataParallel:
        """``model`` in DDP (made once; DDP then copies rank 0's parameters to every rank)."""
        if self._ddp is None or self._ddp.module is not model:
            device_ids = [self.group.device] if self.group.device.type == "cuda" else None
            self._ddp = DistributedDataParallel(model, device_ids=device_ids)
            self._ddp.register_comm_hook(self.weight, weighted_sum_hook)
        return self._ddp

    def batches(self, split, config, generator, steps: int):
        """This rank's contiguous share of each global batch of the epoch."""
        check_batch_size(config.batch_size, self.group)
        check_last_batch(config.batch_size, len(split), steps, self.group)
        for images, labels in self._global_batches(split, config, generator, steps):
            part = share(len(labels), self.group)
            self.weight.value = (part.stop - part.start) / len(labels)
            yield images[part], labels[part]

    def evaluate(self, model: torch.nn.Module, split) -> tuple[float, float]:
        """``(loss, accuracy)`` over the whole split: each rank evaluates a contiguous part, and
        the sums are added over the ranks (never a mean of the ranks' means)."""
        part = share(len(split), self.group)
        local = dataclasses.replace(split, images=split.images[part], labels=split.labels[part])
        means = self._evaluate(model, local) if len(local) else (0.0, 0.0)
        *sums, total = sum_over_ranks([m * len(local) for m in means] + [len(local)], self.group)
        return sums[0] / total, sums[1] / total


def describe(group: Group | None, device) -> dict:
    """How the run is spread, for its record: world size, backend, each rank's device."""
    if group is None:
        return {"world_size": 1, "backend": None, "devices": [str(device)]}
    devices = [None] * group.world_size
    _collective(dist.all_gather_object, devices, str(group.device))
    return {"world_size": group.world_size, "backend": group.backend, "devices": devices}


def local_first(fn, group: Group | None):
    """``fn()`` on every rank, the first process of each machine before the others (a download
    then happens once per machine, not once per process at the same time)."""
    if group is not None and group.local_rank != 0:
        _collective(dist.barrier)
    result = fn()
    if group is not None and group.local_rank == 0:
        _collective(dist.barrier)
    return result


# --------------------------------------------------------------------------------------------
# Agreeing: sums over the ranks, and which rank stopped answering
# --------------------------------------------------------------------------------------------


def agree(loss_sum, correct, samples, group: Group) -> list:
    """The training sums over every rank, so that every rank checks the same numbers at the same
    step (a NaN anywhere stops all); raise ``KeyboardInterrupt`` on every rank once Ctrl-C
    reached any of them."""
    *sums, pressed = sum_over_ranks([loss_sum, correct, samples, _ctrl_c["pressed"]], group)
    if pressed:
        _ctrl_c["pressed"] = False
        raise KeyboardInterrupt
    return sums


def sum_over_ranks(values, group: Group) -> list:
    """The sum over every rank of each number in ``values`` (float64, so counts stay exact)."""
    tensor = torch.tensor([float(v) for v in values], dtype=torch.float64)
    tensor = tensor.to(group.device) if group.backend == "nccl" else tensor
    _collective(dist.all_reduce, tensor)
    return tensor.tolist()


def _collective(op, *args):
    """``op(*args)``; a communication error (``is_communication_error``) becomes a
    ``ProcessLost`` naming the ranks; any other error passes through unchanged."""
    try:
        op(*args)
    except RuntimeError as e:
        if not is_communication_error(e):
            raise
        raise lost(e) from e


def is_communication_error(error: BaseException) -> bool:
    """True for the errors gloo and NCCL raise when a peer died, hung or timed out."""
    text = str(error)
    return isinstance(error, (ProcessLost, getattr(dist, "DistError", ()))) or any(
        marker in text for marker in ("Timed out", "timed out", "Connection closed", "Connection reset",
                                      "NCCL", "pair closure", "monitoredBarrier"))


def lost(error: BaseException) -> ProcessLost:
    """A ``ProcessLost`` for ``error`` that names the ranks that stopped answering, when a last
    short barrier can tell (a rank that died is named in torchrun's summary instead)."""
    if isinstance(error, ProcessLost):
        return error
    group = _group
    where = f"rank {group.rank}: " if group else ""
    first = next((line for line in str(error).splitlines() if line.strip()), type(error).__name__)
    missing = ""
    if group is not None and _monitor is not None:
        try:
            dist.monitored_barrier(_monitor, timeout=datetime.timedelta(seconds=min(5.0, group.timeout_s)),
                                   wait_all_ranks=True)
        except RuntimeError as e:
            named = re.search(r"Ranks? ([\d, ]+) failed to pass", str(e))
            missing = (f" Rank(s) {named.group(1).strip()} stopped answering." if named else
                       " A process exited: torchrun's summary below names its rank.")
    wait = f"{group.timeout_s:g} s ({TIMEOUT_ENV})" if group else "the timeout"
    return ProcessLost(f"{where}lost contact with the other processes of the job (waited at most "
                       f"{wait}).{missing} ({first})")
