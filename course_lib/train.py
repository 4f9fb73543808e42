"""Training the course MLP: ``train_epoch``, ``evaluate`` and ``fit``, the run around them.

``train_epoch`` and ``evaluate`` are the two plain functions of pytorch/examples' ``mnist/main.py``.
``fit(config)`` is the whole run around them, one flat loop over the epochs: it trains
``NeuralNet(config.num_units)`` (built from the custom ``Linear``) as a ``TrainConfig`` says
(``course_lib.config``: the settings, validated, and the optimizer they ask for), and leaves
three things in the runs folder (``out_dir``, default the checkout's ``runs/`` or
``$COURSE_RUNS_DIR``, see ``course_lib.paths``):

``<out_dir>/<run_id>/best.pt`` and ``<out_dir>/<run_id>/last.pt``
    the best epoch's weights, and the ``Checkpoint`` that ``fit(resume=run_id)`` continues from
    (``course_lib.checkpoint``: the saved state of a run, and where to find it).
``<out_dir>/runs.jsonl``
    the run log: one ``course_lib.runlog.RunRecord`` per line (its fields are the schema),
    appended when the run ends, also when it is interrupted (Ctrl-C), stopped by a NaN/infinite
    loss or by an error. Read it with ``read_run_log(out_dir)``.

Data parallelism is handed to ``fit`` as ``Hooks`` (``course_lib.distributed.parallel_hooks``);
this module never imports ``course_lib.distributed``. ``resolve_device`` lives in
``course_lib.device`` (imported from here too, for older code).
"""

import importlib.metadata
import importlib.util
import itertools
import math
import platform
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from . import __version__
from .checkpoint import BEST, LAST, Checkpoint, Progress, find_resume, new_run_id
from .config import DEFAULT_LR, TrainConfig, make_optimizer
from .datasets import Data, Split, load_data
from .device import resolve_device
from .files import save_checkpoint, writable_dir
from .models import NeuralNet, initialise_
from .paths import resolve_out_dir
from .runlog import RUN_LOG, EpochRecord, RunRecord, append_run_log

EVAL_BATCH_SIZE = 4096
CHECK_EVERY = 20  # fit's default: training steps between two looks at the loss (NaN check, bar)
WHERE_RUNS_GO = "--out-dir, TrainConfig(out_dir=...) or the COURSE_RUNS_DIR environment variable"


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C stopped ``fit``. The run is logged as "interrupted"; when ``resumable`` (an epoch
    was completed, so ``last.pt`` exists), ``fit(resume=run_id)`` continues it."""

    def __init__(self, run_id: str, out_dir: Path, epochs_done: int):
        self.run_id, self.out_dir, self.epochs_done = run_id, Path(out_dir), epochs_done
        self.resumable = epochs_done > 0
        super().__init__(f"run {run_id} interrupted after {epochs_done} epoch(s)")


# --------------------------------------------------------------------------------------------
# One epoch of training, one pass of evaluation
# --------------------------------------------------------------------------------------------


def train_epoch(model, batches, optimizer, scheduler=None, watch=None):
    """One pass over ``batches`` of ``(images, labels)``; return ``(loss, accuracy, samples)``.

    Loss and accuracy are over every sample seen (sums, not a mean of batch means). They are kept
    as tensors on the device, so the loop never waits for the device, except every
    ``watch.check_every`` steps (``DEFAULT_CHECK_EVERY`` without a ``watch``) and at the end, when
    a NaN/infinite loss is caught and ``watch.bar`` (if any) shows them.
    """
    model.train()
    loss_sum = correct = 0
    samples = step = shown = 0
    check_every = watch.check_every if watch is not None else DEFAULT_CHECK_EVERY
    for step, (images, labels) in enumerate(batches, 1):
        logits = model(images)
        loss = F.cross_entropy(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        loss_sum = loss_sum + loss.detach() * len(labels)
        correct = correct + (logits.detach().argmax(1) == labels).sum()
        samples += len(labels)
        if step % check_every == 0:
            _report(loss_sum, correct, samples, watch, step - shown)
            shown = step
    if samples:
        loss_sum, correct, samples = _report(loss_sum, correct, samples, watch, step - shown)
    return float(loss_sum) / max(samples, 1), float(correct) / max(samples, 1), samples


def _report(loss_sum, correct, samples, watch, advance):
    """Stop on a NaN/infinite loss; show the running loss and accuracy (this waits for the device).
    When ``watch`` has an ``agree`` (several processes training together, see
    ``course_lib.distributed``), the sums are first added over every process: then every process
    checks the same numbers at the same step, and all stop together (on a NaN anywhere, or on
    Ctrl-C). Return the sums."""
    if watch is not None and watch.agree is not None:
        loss_sum, correct, samples = watch.agree(loss_sum, correct, samples)
    loss = float(loss_sum) / samples
    if not math.isfinite(loss):
        raise TrainingDiverged(f"the training loss became {loss}")
    if watch is not None and watch.bar is not None:
        watch.bar.set_postfix(loss=f"{loss:.4f}", acc=f"{float(correct) / samples:.4f}", refresh=False)
        watch.bar.update(advance)
    return loss_sum, correct, int(samples)


@torch.no_grad()
def evaluate(model, batches):
    """``(loss, accuracy)`` of ``model`` over every sample of ``batches`` (in order, no shuffling)."""
    model.eval()
    loss_sum = correct = 0
    samples = 0
    for images, labels in batches:
        logits = model(images)
        loss_sum = loss_sum + F.cross_entropy(logits, labels, reduction="sum")
        correct = correct + (logits.argmax(1) == labels).sum()
        samples += len(labels)
    if not samples:
        raise ValueError("evaluate: no batches to evaluate")
    return float(loss_sum) / samples, float(correct) / samples


# --------------------------------------------------------------------------------------------
# What fit is handed: how often to look at the loss, and what data parallelism changes
# --------------------------------------------------------------------------------------------


DEFAULT_CHECK_EVERY = 50  # train_epoch looks at the loss this often when handed no Watch


@dataclass
class Watch:
    """How ``train_epoch`` watches an epoch: look at the loss every ``check_every`` steps (stop
    on a NaN, update ``bar`` when there is one), the same steps on every process, and add the
    sums over the processes first with ``agree`` (``None``: this process alone)."""

    check_every: int = DEFAULT_CHECK_EVERY
    bar: tqdm | None = None
    agree: Callable | None = None  # (loss_sum, correct, samples) -> the same sums over every process

    def __post_init__(self):
        if not (isinstance(self.check_every, int) and not isinstance(self.check_every, bool)
                and self.check_every > 0):
            raise ValueError(f"Watch: check_every must be a positive number of steps, got {self.check_every!r}")


def shuffled_batches(split: Split, config: TrainConfig, generator: torch.Generator, steps: int):
    """One epoch's training batches: ``steps`` batches of ``split``, shuffled by ``generator``
    and shifted as ``config.shift`` says."""
    return itertools.islice(split.batches(config.batch_size, generator, config.shift), steps)


def evaluate_split(model: nn.Module, split: Split) -> tuple[float, float]:
    """``evaluate`` over the whole of ``split``, in order."""
    return evaluate(model, split.batches(EVAL_BATCH_SIZE))


@dataclass(frozen=True)
class Hooks:
    """Where a caller changes how ``fit`` runs without copying it. Data-parallel training
    (``course_lib.distributed.parallel_hooks``) gives each process its share of every batch, sums
    the loss over the processes, all-reduces the evaluation, and lets one process write."""

    batches: Callable = shuffled_batches  # (split, config, generator, steps) -> an epoch's batches
    evaluate: Callable = evaluate_split  # (model, split) -> (loss, accuracy) over the whole split
    wrap: Callable = lambda model: model  # the module train_epoch steps (e.g. DDP around it)
    agree: Callable | None = None  # Watch.agree: the training sums over every process
    should_write: bool = True  # checkpoints and the run-log line; False: this process writes nothing
    on_epoch: Callable | None = None  # called as on_epoch(row: EpochRecord, model) after every epoch
    processes: dict | None = None  # world_size, backend, devices for the record (None: this one)


@dataclass
class RunResult:
    """What ``fit`` returns: the run's record and the model holding the best checkpoint."""

    record: RunRecord
    model: nn.Module
    out_dir: Path

    @property
    def run_id(self) -> str:
        return self.record.run_id

    @property
    def test_acc(self) -> float | None:
        return self.record.test_acc

    @property
    def checkpoint(self) -> Path | None:
        return self.out_dir / self.record.checkpoint if self.record.checkpoint else None

    @property
    def run_log(self) -> Path:
        return self.out_dir / RUN_LOG


# --------------------------------------------------------------------------------------------
# fit: the whole run
# --------------------------------------------------------------------------------------------


def fit(config: TrainConfig | None = None, *, resume=None, data: Data | None = None,
        progress: bool = True, hooks: Hooks | None = None, check_every: int = CHECK_EVERY) -> RunResult:
    """Train ``NeuralNet`` as ``config`` says, keep the best checkpoint, test it, log the run.

    Each epoch trains on the training split (shuffled by a generator seeded with ``config.seed``),
    then evaluates on the validation split; the epoch with the lowest validation loss is saved
    as ``best.pt``, and test loss/accuracy are measured with those weights at the end.

    Args:
        config: the run's settings (``TrainConfig()`` when omitted).
        resume: a run id (in ``config.out_dir``), a run folder or a ``last.pt``: continue that
            run with its own saved config; the result equals an uninterrupted run's on the CPU.
        data: already loaded ``Data`` to train on, instead of loading ``config.dataset``.
        progress: show the progress: tqdm bars on a terminal or in Jupyter, one line per epoch
            when stderr is a file or a pipe.
        hooks: ``Hooks`` that change where batches come from, how evaluation is done, how the
            processes agree, whether this process writes files, and what runs after every epoch.
        check_every: training steps between two looks at the loss (a NaN stops the run there).

    Raises:
        Interrupted: Ctrl-C (a ``KeyboardInterrupt``), after logging the run as "interrupted";
            the checkpoints stay intact.
        TrainingDiverged: the loss became NaN or infinite, or no epoch gave a finite validation
            loss; the run is logged as "diverged".
        NotWritable: the runs folder cannot be written (found out before any training).
    """
    if not (isinstance(check_every, int) and not isinstance(check_every, bool) and check_every > 0):
        raise ValueError(f"fit: check_every must be a positive number of steps, got {check_every!r}")
    hooks = hooks or Hooks()
    run = _Run.start(config, resume, data, hooks)
    config, model, optimizer, done = run.config, run.model, run.optimizer, run.progress
    status, test = "failed", (None, None)
    try:
        with _Display(progress, run.data.name, config.epochs, done.epoch) as display:
            for epoch in range(done.epoch + 1, config.epochs + 1):
                start, lr = time.perf_counter(), optimizer.param_groups[0]["lr"]
                batches = hooks.batches(run.data.train, config, run.generator, run.steps)
                with display.batch_bar(epoch, run.steps) as bar:
                    try:
                        train_loss, train_acc, samples = train_epoch(
                            hooks.wrap(model), batches, optimizer, run.scheduler,
                            Watch(check_every, bar, hooks.agree))
                    except TrainingDiverged as e:
                        raise TrainingDiverged(_lower_the_lr(e, epoch, lr, config)) from None
                seconds = time.perf_counter() - start
                val_loss, val_acc = hooks.evaluate(model, run.data.val)
                row = EpochRecord(epoch, train_loss, train_acc, val_loss, val_acc, lr, seconds)
                run.keep(row, samples)  # best.pt when the validation loss improved; last.pt always
                display.epoch_done(row)
                if hooks.on_epoch is not None:
                    hooks.on_epoch(row, model)
        test = run.test_best()
        status = "completed"
    except TrainingDiverged:
        status = "diverged"
        raise
    except KeyboardInterrupt as e:
        status = "interrupted"
        raise Interrupted(done.run_id, run.out_dir, done.epoch) from e
    finally:
        record = run.finish(status, test)
    return RunResult(record, model, run.out_dir)


def _lower_the_lr(error: TrainingDiverged, epoch: int, lr: float, config: TrainConfig) -> str:
    """What a NaN in training says: where, and the lower learning rate to try."""
    return (f"training stopped in epoch {epoch}: {error} at learning rate {lr:.3g}, which is "
            f"probably too high: try a lower one, e.g. lr={lr / 10:.3g} (--lr {lr / 10:.3g}; "
            f"{config.optimizer}'s default is {DEFAULT_LR[config.optimizer]})")


class _Display:
    """How ``fit`` shows its progress: tqdm bars where someone watches (a terminal, Jupyter);
    one line per epoch on stderr where it is a file or a pipe (``make train > log 2>&1``), so a
    log holds no bar redraws; nothing when ``show`` is False."""

    def __init__(self, show: bool, name: str, epochs: int, done: int):
        self.lines, self.epochs = show and not _watched(sys.stderr), epochs
        self.bars = show and not self.lines
        self.bar = tqdm(total=epochs, initial=done, unit="epoch", desc=name, disable=not self.bars)

    def __enter__(self) -> "_Display":
        return self

    def __exit__(self, *error) -> None:
        self.bar.close()

    def batch_bar(self, epoch: int, steps: int) -> tqdm:
        return tqdm(total=steps, desc=f"epoch {epoch}", unit="batch", leave=False, disable=not self.bars)

    def epoch_done(self, row: EpochRecord) -> None:
        values = {"train_acc": f"{row.train_acc:.4f}", "val_loss": f"{row.val_loss:.4f}",
                  "val_acc": f"{row.val_acc:.4f}"}
        if self.lines:
            shown = "  ".join(f"{k} {v}" for k, v in values.items())
            print(f"epoch {row.epoch}/{self.epochs}: {shown}", file=sys.stderr, flush=True)
        self.bar.set_postfix(**values, refresh=False)
        self.bar.update(1)


def _watched(stream) -> bool:
    """Whether bars drawn on ``stream`` are seen as bars: a terminal, or a Jupyter kernel's output
    (where ``tqdm.auto`` draws a widget; found as ``tqdm.autonotebook`` finds it)."""
    isatty = getattr(stream, "isatty", None)
    if isatty is not None and isatty():
        return True
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


@dataclass
class _Run:
    """One run in progress: its settings, data, model, optimizer and counters."""

    config: TrainConfig
    out_dir: Path
    device: torch.device
    data: Data
    hooks: Hooks
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    generator: torch.Generator
    progress: Progress
    steps: int  # training batches per epoch
    resumed_at: int
    clock: float  # perf_counter() when this session started, or ended its last epoch
    started_at: str  # ISO 8601, UTC
    best_state: dict | None = None  # the best epoch's weights, once this session has seen it

    @classmethod
    def start(cls, config, resume, data, hooks: Hooks) -> "_Run":
        """Check the runs folder, load the data, build the model and optimizer: fresh from
        ``config.seed``, or restored from ``resume``'s ``last.pt``."""
        clock, started_at = time.perf_counter(), datetime.now(timezone.utc).isoformat(timespec="seconds")
        out_dir = resolve_out_dir(config.out_dir if config else None)
        checkpoint = None
        if resume is not None:
            last = find_resume(resume, out_dir)
            checkpoint, out_dir = Checkpoint.load(last), last.parent.parent
            config = checkpoint.config
        config = config if config is not None else TrainConfig()
        if hooks.should_write:  # found out now, not after the training it would keep
            writable_dir(out_dir, "the run log and checkpoints", WHERE_RUNS_GO)
        device = resolve_device(config.device)
        if data is None:
            data = load_data(checkpoint.dataset if checkpoint else config.dataset, device, config.data_dir)
        torch.manual_seed(config.seed)
        model = initialise_(NeuralNet(config.num_units), config.init).to(device)
        steps = min(data.train.num_batches(config.batch_size), config.max_batches or math.inf)
        optimizer, scheduler = make_optimizer(config, model, steps)
        generator = torch.Generator(device=device).manual_seed(config.seed)
        progress = checkpoint.progress if checkpoint else Progress(new_run_id(out_dir))
        run = cls(config, out_dir, device, data, hooks, model, optimizer, scheduler, generator,
                  progress, steps, resumed_at=progress.epoch, clock=clock, started_at=started_at)
        if checkpoint is not None:
            run.restore(checkpoint.states)
        return run

    def states(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "generator": self.generator.get_state(),
                "torch_rng": torch.get_rng_state()}

    def restore(self, states: dict) -> None:
        self.model.load_state_dict(states["model"])
        self.optimizer.load_state_dict(states["optimizer"])
        self.scheduler.load_state_dict(states["scheduler"])
        self.generator.set_state(states["generator"])
        torch.set_rng_state(states["torch_rng"])

    def keep(self, row: EpochRecord, samples: int) -> None:
        """Count the epoch; save best.pt when its validation loss is the best so far, and last.pt."""
        improved = self.progress.add(row, samples)
        now = time.perf_counter()
        self.progress.wall_seconds, self.clock = self.progress.wall_seconds + now - self.clock, now
        if improved:
            self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        if self.hooks.should_write:
            run_dir = self.out_dir / self.progress.run_id
            if improved:
                save_checkpoint(self.best_state, run_dir / BEST)
            Checkpoint(self.config, self.data.name, self.progress, self.states()).save(run_dir / LAST)

    def test_best(self) -> tuple[float, float]:
        """Test loss and accuracy of the best epoch's weights, which the model then holds."""
        if self.progress.best_epoch is None:
            raise TrainingDiverged("no epoch gave a finite validation loss")
        best = self.best_state  # else the best epoch came before a resume: read it back
        if best is None:
            path = self.out_dir / self.progress.run_id / BEST
            best = torch.load(path, map_location=self.device, weights_only=True)
        self.model.load_state_dict(best)
        return self.hooks.evaluate(self.model, self.data.test)

    def finish(self, status: str, test) -> RunRecord:
        """The run's record, appended to the run log (by the process that writes)."""
        record = _record(self, status, test)
        if self.hooks.should_write:
            append_run_log(self.out_dir / RUN_LOG, record)
        return record


def _torchvision_version() -> str:
    """``torchvision.__version__`` without importing torchvision when nothing has yet (an import
    costs 3 s of CPU: it imports ``torch._dynamo``): read from its ``version.py``."""
    if "torchvision" in sys.modules:
        return sys.modules["torchvision"].__version__
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        return "not installed"
    found = re.search(r"^__version__ = ['\"]([^'\"]+)", Path(spec.origin).with_name("version.py").read_text(),
                      re.MULTILINE)
    return found.group(1) if found else importlib.metadata.version("torchvision")


def _record(run: _Run, status: str, test) -> RunRecord:
    """The run-log line (``RunRecord``: the schema lists and explains every field)."""
    done, config, data = run.progress, run.config, run.data
    last = done.history[-1] if done.history else {}
    alone = {"world_size": 1, "backend": None, "devices": [str(run.device)]}
    return RunRecord(
        run_id=done.run_id, status=status, **config.as_record(),
        resolved_dataset=data.name, device_used=str(run.device), **(run.hooks.processes or alone),
        torch_version=torch.__version__, torchvision_version=_torchvision_version(),
        python_version=platform.python_version(), course_lib_version=__version__,
        started_at=run.started_at, wall_seconds=done.wall_seconds + time.perf_counter() - run.clock,
        train_seconds=done.train_seconds,
        samples_per_second=done.samples / done.train_seconds if done.train_seconds else None,
        epochs_completed=len(done.history), resumed_at_epoch=run.resumed_at,
        best_epoch=done.best_epoch, best_val_loss=done.best_val_loss,
        **{f"final_{k}": last.get(k) for k in ("train_loss", "train_acc", "val_loss", "val_acc")},
        test_loss=test[0], test_acc=test[1],
        checkpoint=f"{done.run_id}/{BEST}" if done.best_epoch is not None else None,
        input_mean=data.mean, input_std=data.std, history=done.history,
    )
