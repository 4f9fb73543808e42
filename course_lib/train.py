"""Training the course MLP: ``TrainConfig``, ``train_epoch``, ``evaluate``, ``fit``; run log, checkpoints.

``fit(config)`` trains ``NeuralNet(config.num_units)`` (built from the custom ``Linear``) and leaves
two things in ``out_dir`` (default: the checkout's ``runs/``, or ``$COURSE_RUNS_DIR``):

``<out_dir>/<run_id>/best.pt``
    the state dict of the epoch with the lowest validation loss:
    ``NeuralNet(num_units).load_state_dict(torch.load(path, weights_only=True))``.
``<out_dir>/<run_id>/last.pt``
    the state to resume from (model, optimizer, scheduler, epoch, history, RNG states, the config
    as a dict), written at the end of every epoch; ``fit(config, resume=run_id)`` continues it.
``<out_dir>/runs.jsonl``
    the run log: one JSON object per line, one line per run, appended when the run ends, also
    when it is interrupted (Ctrl-C) or stopped by a NaN/infinite loss. Read it with
    ``read_run_log(out_dir)`` or ``pandas.read_json(path, lines=True)``. Flat keys:

    run_id; status ("completed", "interrupted", "diverged", or "failed" for an error); every
    ``TrainConfig`` field (dataset, epochs, batch_size, lr resolved to a number, momentum,
    optimizer, weight_decay, schedule, shift, num_units, init, seed, device, max_batches, data_dir,
    out_dir); resolved_dataset ("mnist-5k" when "auto" fell back); device_used; torch_version,
    torchvision_version, python_version, course_lib_version; started_at (ISO 8601, UTC);
    wall_seconds, train_seconds, samples_per_second; epochs_completed, resumed_at_epoch (0 for a
    fresh run); best_epoch, best_val_loss; final_train_loss, final_train_acc, final_val_loss,
    final_val_acc; test_loss, test_acc (of the best checkpoint; null unless completed);
    checkpoint (best.pt's path relative to out_dir); input_mean, input_std (the model expects
    ``x = (pixel / 255 - input_mean) / input_std``); and history, a list of per-epoch dicts
    {epoch, train_loss, train_acc, val_loss, val_acc, lr, seconds}: lr is the learning rate at
    the epoch's first batch, seconds its training time (evaluation excluded: they add up to
    train_seconds).

Accuracies are fractions in [0, 1]: correct predictions counted over every sample. Numbers that
are not finite are written as null. A resumed run appends a new line with the same run_id; keep
the last line of each run with ``df.drop_duplicates("run_id", keep="last")``.
"""

import dataclasses
import itertools
import math
import platform
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from . import __version__, distributed
from .datasets import DATASETS, Data, load_data
from .models import INITS, NeuralNet, initialise_
from .paths import resolve_out_dir
from .runlog import RUN_LOG, append_run_log, save_checkpoint, writable_dir

DEFAULT_LR = {"sgd": 0.05, "adam": 0.002}
EVAL_BATCH_SIZE = 4096


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite."""


@dataclass
class TrainConfig:
    """Everything that decides a run. The defaults train well in under a minute on a 2-core CPU.

    ``lr=None`` takes the optimizer's default (``DEFAULT_LR``). ``sgd`` uses Nesterov momentum
    (``momentum``); ``adam`` ignores ``momentum``. ``schedule="cosine"`` lowers the learning rate
    after every batch as ``lr_t = lr * (1 + cos(pi * t / T)) / 2`` over the run's ``T`` batches.
    ``shift`` moves each training batch by up to that many pixels in x and y (augmentation).
    ``init="randn"`` redraws the weights from a standard normal, the source lesson's mistake
    (see ``models.initialise_``), for sweeps that show why it fails.
    ``max_batches`` caps the batches per epoch: the fast mode for notebooks and CI.
    """

    dataset: str = "auto"
    epochs: int = 30
    batch_size: int = 128
    lr: float | None = None
    momentum: float = 0.9
    optimizer: str = "sgd"
    weight_decay: float = 0.0
    schedule: str = "cosine"
    shift: int = 1
    num_units: int = 128
    init: str = "default"
    seed: int = 0
    device: str = "auto"
    max_batches: int | None = None
    data_dir: str | None = None
    out_dir: str | None = None

    def __post_init__(self):
        def need(ok, what):
            if not ok:
                raise ValueError(f"TrainConfig: {what}")

        need(self.dataset in DATASETS,
             f"dataset must be one of {', '.join(DATASETS)}, got {self.dataset!r}")
        need(self.optimizer in DEFAULT_LR,
             f"optimizer must be 'sgd' or 'adam', got {self.optimizer!r}")
        need(self.init in INITS, f"init must be one of {', '.join(INITS)}, got {self.init!r}")
        need(self.schedule in ("cosine", "constant"),
             f"schedule must be 'cosine' or 'constant', got {self.schedule!r}")
        for name in ("epochs", "batch_size", "num_units"):
            value = getattr(self, name)
            need(isinstance(value, int) and value >= (2 if name == "num_units" else 1),
                 f"{name} must be a positive integer, got {value!r}")
        need(self.max_batches is None or (isinstance(self.max_batches, int) and self.max_batches >= 1),
             f"max_batches must be a positive integer or None, got {self.max_batches!r}")
        need(isinstance(self.shift, int) and 0 <= self.shift <= 4,
             f"shift must be 0..4 pixels, got {self.shift!r}")
        need(self.lr is None or (math.isfinite(self.lr) and self.lr > 0),
             f"lr must be a positive number, got {self.lr!r}")
        need(0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum!r}")
        need(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay!r}")

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.optimizer]


def resolve_device(device="auto") -> torch.device:
    """``auto`` is CUDA when available, else the CPU; asking for a missing CUDA is an error."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except RuntimeError:
        raise ValueError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for, but torch.cuda.is_available() is False; "
                         "use device 'cpu' or 'auto'")
    return device


# --------------------------------------------------------------------------------------------
# One epoch of training, one pass of evaluation
# --------------------------------------------------------------------------------------------


def train_epoch(model, batches, optimizer, scheduler=None, progress=None):
    """One pass over ``batches`` of ``(images, labels)``; return ``(loss, accuracy, samples)``.

    Loss and accuracy are over every sample seen (sums, not a mean of batch means). They are kept
    as tensors on the device, so the loop never waits for the device, except every few percent
    of the epoch, when ``progress`` (a tqdm bar) shows them and a NaN/infinite loss is caught.
    """
    model.train()
    loss_sum = correct = 0
    samples = step = shown = 0
    check_every = max(1, (progress.total or 0) // 20) if progress is not None else 50
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
            _report(loss_sum, correct, samples, progress, step - shown)
            shown = step
    if samples:
        _report(loss_sum, correct, samples, progress, step - shown)
    return float(loss_sum) / max(samples, 1), float(correct) / max(samples, 1), samples


def _report(loss_sum, correct, samples, progress, advance):
    """Stop on a NaN/infinite loss; show the running loss and accuracy (this waits for the device)."""
    group = distributed.current()
    if group is not None:  # every rank checks the same global numbers, so all stop together
        loss_sum, correct, samples = distributed.sum_over_ranks([loss_sum, correct, samples], group)
    loss = float(loss_sum) / samples
    if not math.isfinite(loss):
        raise TrainingDiverged(f"the training loss became {loss}")
    if progress is not None:
        progress.set_postfix(loss=f"{loss:.4f}", acc=f"{float(correct) / samples:.4f}", refresh=False)
        progress.update(advance)


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


def evaluate_split(model, split) -> tuple[float, float]:
    """``evaluate`` over a whole split; on several processes each evaluates a contiguous part
    and the sums are added up, so every sample counts exactly once."""
    group = distributed.current()
    if group is None:
        return evaluate(model, split.batches(EVAL_BATCH_SIZE))
    part = distributed.local_split(split, group)
    means = evaluate(model, part.batches(EVAL_BATCH_SIZE)) if len(part) else (0.0, 0.0)
    return tuple(distributed.combine(means, len(part), group)[:2])


def make_optimizer(config: TrainConfig, model: nn.Module, steps_per_epoch: int):
    """The optimizer and the per-batch learning-rate scheduler that ``config`` asks for."""
    lr = config.learning_rate
    if config.optimizer == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=config.momentum,
                                    nesterov=config.momentum > 0, weight_decay=config.weight_decay)
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=config.weight_decay)
    total = config.epochs * steps_per_epoch

    def factor(step):  # lr after `step` batches = lr * factor(step)
        if config.schedule == "constant":
            return 1.0
        return 0.5 * (1 + math.cos(math.pi * min(step, total) / total))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# --------------------------------------------------------------------------------------------
# fit: the whole run
# --------------------------------------------------------------------------------------------


@dataclass
class RunResult:
    """What ``fit`` returns: the run-log record and the model holding the best checkpoint."""

    record: dict
    model: nn.Module
    out_dir: Path

    @property
    def run_id(self) -> str:
        return self.record["run_id"]

    @property
    def test_acc(self) -> float | None:
        return self.record["test_acc"]

    @property
    def checkpoint(self) -> Path | None:
        return self.out_dir / self.record["checkpoint"] if self.record["checkpoint"] else None

    @property
    def run_log(self) -> Path:
        return self.out_dir / RUN_LOG


@dataclass
class _Done:
    """What a run has done so far; saved in ``last.pt`` and restored by ``resume``."""

    run_id: str
    epoch: int = 0
    history: list = field(default_factory=list)
    best_epoch: int | None = None
    best_val_loss: float = math.inf
    samples: int = 0
    train_seconds: float = 0.0
    wall_seconds: float = 0.0


def _new_run_id(out_dir: Path) -> str:
    while True:  # the random suffix keeps two runs started in the same second apart
        run_id = f"{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"
        if not (out_dir / run_id).exists():
            return run_id


def _load_last(resume, out_dir: Path) -> tuple[Path, dict]:
    last = _find_resume(resume, out_dir)
    return last, torch.load(last, map_location="cpu", weights_only=True)


def _find_resume(resume, out_dir: Path) -> Path:
    path = Path(resume)
    for candidate in (path, path / "last.pt", out_dir / str(resume) / "last.pt"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"nothing to resume at {resume!r}: give a run id in {out_dir}, a run folder, or its "
        "last.pt (a run can be resumed once it has finished its first epoch)")


def _epoch(epoch, model, data: Data, config: TrainConfig, optimizer, scheduler, generator, steps,
           progress: bool) -> dict:
    """Train one epoch, validate; return its history row."""
    start, lr = time.perf_counter(), optimizer.param_groups[0]["lr"]
    batches = itertools.islice(data.train.batches(config.batch_size, generator, config.shift), steps)
    group = distributed.current()
    if group is not None:  # this process's share of each global batch
        batches = distributed.local_batches(batches, model, group)
    with tqdm(total=steps, desc=f"epoch {epoch}", unit="batch", leave=False,
              disable=not progress) as bar:
        try:
            train_loss, train_acc, samples = train_epoch(  # every rank checks at the same steps
                model, batches, optimizer, scheduler, bar if progress or group else None)
        except TrainingDiverged as e:
            raise TrainingDiverged(
                f"training stopped in epoch {epoch}: {e} at learning rate {lr:.3g}, which is "
                f"probably too high: try a lower one, e.g. lr={lr / 10:.3g} (--lr {lr / 10:.3g}; "
                f"{config.optimizer}'s default is {DEFAULT_LR[config.optimizer]})"
            ) from None
    seconds = time.perf_counter() - start
    if group is not None:
        train_loss, train_acc, samples = distributed.combine([train_loss, train_acc], samples, group)
    val_loss, val_acc = evaluate_split(distributed.unwrap(model), data.val)
    return {"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc, "val_loss": val_loss,
            "val_acc": val_acc, "lr": lr, "seconds": seconds, "samples": samples}


def _record(status, config: TrainConfig, data: Data, device, done: _Done, resumed_at, test,
            started_at, wall_seconds) -> dict:
    """The run-log line (its keys are listed in this module's docstring)."""
    import torchvision

    last = done.history[-1] if done.history else {}
    return {
        "run_id": done.run_id, "status": status,
        **{k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(config).items()},
        "lr": config.learning_rate, "resolved_dataset": data.name, "device_used": str(device),
        "torch_version": torch.__version__, "torchvision_version": torchvision.__version__,
        "python_version": platform.python_version(), "course_lib_version": __version__,
        "started_at": started_at, "wall_seconds": wall_seconds, "train_seconds": done.train_seconds,
        "samples_per_second": done.samples / done.train_seconds if done.train_seconds else None,
        "epochs_completed": len(done.history), "resumed_at_epoch": resumed_at,
        "best_epoch": done.best_epoch, "best_val_loss": done.best_val_loss,
        **{f"final_{k}": last.get(k) for k in ("train_loss", "train_acc", "val_loss", "val_acc")},
        "test_loss": test[0], "test_acc": test[1],
        "checkpoint": f"{done.run_id}/best.pt" if done.best_epoch is not None else None,
        "input_mean": data.mean, "input_std": data.std,
        "history": done.history,
    }


def fit(config: TrainConfig | None = None, *, resume=None, data: Data | None = None,
        progress: bool = True, on_epoch=None) -> RunResult:
    """Train ``NeuralNet`` as ``config`` says, keep the best checkpoint, test it, log the run.

    Each epoch trains on the training split (shuffled by a generator seeded with ``config.seed``),
    then evaluates on the validation split; the epoch with the lowest validation loss is saved
    as ``best.pt``, and test loss/accuracy are measured with those weights at the end.

    Args:
        config: the run's settings (``TrainConfig()`` when omitted).
        resume: a run id (in ``config.out_dir``), a run folder or a ``last.pt``: continue that
            run with its own saved config; the result equals an uninterrupted run's on the CPU.
        data: already loaded ``Data`` to train on, instead of loading ``config.dataset``.
        progress: show tqdm progress bars.
        on_epoch: called as ``on_epoch(history_row, model)`` after every epoch.

    Raises:
        KeyboardInterrupt: after logging the run as "interrupted" (checkpoints stay intact); it
            carries ``run_id``, ``epochs_done`` and ``out_dir``.
        TrainingDiverged: the loss became NaN or infinite; the run is logged as "diverged".
        NotWritable: the runs folder cannot be written (found out before any training).
    """
    clock, started_at = time.perf_counter(), datetime.now(timezone.utc).isoformat(timespec="seconds")
    out_dir = resolve_out_dir(config.out_dir if config else None)
    group = distributed.current()  # None unless torchrun started several processes
    state = None
    if resume is not None:  # rank 0 reads the files and writes them; the others are told
        last, state = distributed.from_main(lambda: _load_last(resume, out_dir), group)
        config, out_dir = TrainConfig(**state["config"]), last.parent.parent
    config = config if config is not None else TrainConfig()
    distributed.from_main(lambda: writable_dir(
        out_dir, "the run log and checkpoints",
        "--out-dir, TrainConfig(out_dir=...) or the COURSE_RUNS_DIR environment variable"), group)
    device = group.device if group else resolve_device(config.device)
    if group is not None:
        distributed.check_batch_size(config.batch_size, group)
    if data is None:  # a resumed run reloads what it trained on, even if "auto" would now differ
        name = state["resolved_dataset"] if state else config.dataset
        data = distributed.local_first(lambda: load_data(name, device, config.data_dir), group,
                                       needed=name != "mnist-5k")  # that one is never downloaded

    torch.manual_seed(config.seed)
    model = initialise_(NeuralNet(config.num_units), config.init).to(device)
    steps = min(data.train.num_batches(config.batch_size), config.max_batches or math.inf)
    if group is not None:
        distributed.check_last_batch(config.batch_size, len(data.train), steps, group)
    net = distributed.wrap(model, group) if group else model  # `model` is what gets saved
    processes = distributed.describe(group, device)
    optimizer, scheduler = make_optimizer(config, model, steps)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    writes = group is None or group.is_main
    if state is None:
        done = _Done(distributed.from_main(lambda: _new_run_id(out_dir), group))
    else:
        done = _Done(**{f.name: state[f.name] for f in dataclasses.fields(_Done)})
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
    resumed_at, run_dir, best = done.epoch, out_dir / done.run_id, None
    status, test, failure = "interrupted", (None, None), None
    bar = tqdm(total=config.epochs, initial=done.epoch, unit="epoch", desc=data.name,
               disable=not progress)
    try:
        for epoch in range(done.epoch + 1, config.epochs + 1):
            row = _epoch(epoch, net, data, config, optimizer, scheduler, generator, steps, progress)
            done.samples += row.pop("samples")
            done.train_seconds += row["seconds"]
            done.history.append(row)
            if row["val_loss"] < done.best_val_loss:
                best = {k: v.clone() for k, v in model.state_dict().items()}
                if writes:
                    save_checkpoint(best, run_dir / "best.pt")
                done.best_val_loss, done.best_epoch = row["val_loss"], epoch
            done.epoch = epoch
            done.wall_seconds, clock = done.wall_seconds + time.perf_counter() - clock, time.perf_counter()
            writes and save_checkpoint({
                **dataclasses.asdict(done), "config": dataclasses.asdict(config),
                "resolved_dataset": data.name, "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "generator": generator.get_state(), "torch_rng": torch.get_rng_state(),
            }, run_dir / "last.pt")
            bar.set_postfix({k: f"{row[k]:.4f}" for k in ("train_acc", "val_loss", "val_acc")},
                            refresh=False)
            bar.update(1)
            if on_epoch is not None:
                on_epoch(row, model)
        if done.best_epoch is None:
            raise TrainingDiverged("no epoch gave a finite validation loss")
        if best is None:  # the best epoch came before a resume: read its checkpoint
            best = distributed.from_main(lambda: torch.load(
                run_dir / "best.pt", map_location="cpu", weights_only=True), group)
        model.load_state_dict(best)
        test = evaluate_split(model, data.test)
        status = "completed"
    except TrainingDiverged as e:
        status, failure = "diverged", e
    except BaseException as e:  # Ctrl-C, or a bug: log what was done, then let it propagate
        status = "interrupted" if isinstance(e, KeyboardInterrupt) else "failed"
        if isinstance(e, KeyboardInterrupt):  # what the caller needs to say how to go on
            e.run_id, e.epochs_done, e.out_dir = done.run_id, done.epoch, out_dir
        if group is not None and distributed.is_communication_error(e):
            raise distributed.lost(e) from e
        raise
    finally:
        bar.close()
        wall = done.wall_seconds + time.perf_counter() - clock
        final = {**_record(status, config, data, device, done, resumed_at, test, started_at, wall),
                 **processes}
        if writes:
            append_run_log(out_dir / RUN_LOG, final)
    if failure is not None:
        raise failure
    return RunResult(final, model, out_dir)
