"""Test-only run records: complete ``RunRecord``s built through the schema, for run-log fixtures,
and a made-up sweep whose every expected number is known in advance."""

import dataclasses
import itertools
import json

from course_lib.config import TrainConfig
from course_lib.runlog import RUN_LOG, EpochRecord, RunRecord


def epoch_record(**changes) -> dict:
    """One ``history`` item, as the run log holds it (a dict of ``EpochRecord``'s fields)."""
    values = dict(epoch=1, train_loss=1.0, train_acc=0.7, val_loss=1.1, val_acc=0.7, lr=0.05, seconds=0.5)
    return dataclasses.asdict(EpochRecord(**{**values, **changes}))


def run_record(**changes) -> RunRecord:
    """A completed run of ``TrainConfig(dataset="mnist-5k", device="cpu")``, with ``changes``
    (any ``RunRecord`` field) applied; every field is set, so a field added to the schema and
    not here fails at once."""
    config = {**dataclasses.asdict(TrainConfig(dataset="mnist-5k", device="cpu")), "lr": 0.05}
    values = dict(
        run_id="run00", status="completed", **config, resolved_dataset="mnist-5k", device_used="cpu",
        world_size=1, backend=None, devices=["cpu"],
        torch_version="2.14.1", torchvision_version="0.29.1", python_version="3.11.7",
        course_lib_version="0.1.0", started_at="2026-01-01T00:00:00+00:00", wall_seconds=2.0,
        train_seconds=1.5, samples_per_second=1000.0, epochs_completed=1, resumed_at_epoch=0,
        best_epoch=1, best_val_loss=1.1, final_train_loss=1.0, final_train_acc=0.7,
        final_val_loss=1.1, final_val_acc=0.7, test_loss=1.2, test_acc=0.69,
        checkpoint="run00/best.pt", input_mean=0.13, input_std=0.31, history=[epoch_record()],
    )
    return RunRecord(**{**values, **changes})


GRID = list(itertools.product([0.01, 0.1], [32, 128], ["sgd", "adam"]))  # lr, num_units, optimizer


def make_run(i, lr, num_units, optimizer, epochs=3, status="completed"):
    """One run-log record (a dict, as a line of the log). Validation accuracy is chosen so that
    adam > sgd, more units help, lr 0.1 helps, and the last epoch is the best."""
    final_acc = 0.80 + 0.05 * (optimizer == "adam") + 0.02 * (num_units == 128) + 0.01 * (lr == 0.1)
    history = [epoch_record(epoch=e, train_loss=1.0 / e, train_acc=final_acc - 0.1 / e, val_loss=1.2 / e,
                            val_acc=final_acc - 0.05 * (epochs - e), lr=lr, seconds=0.5)
               for e in range(1, epochs + 1)]
    diverged = status == "diverged"
    last = history[-1]
    record = run_record(
        run_id=f"run{i:02d}", status=status, epochs=epochs, batch_size=64, lr=lr,
        optimizer=optimizer, num_units=num_units, epochs_completed=0 if diverged else epochs,
        best_epoch=None if diverged else epochs,
        best_val_loss=None if diverged else last["val_loss"],
        final_train_loss=None if diverged else last["train_loss"],
        final_train_acc=None if diverged else last["train_acc"],
        final_val_loss=None if diverged else last["val_loss"],
        final_val_acc=None if diverged else last["val_acc"],
        test_loss=None if diverged else 0.3, test_acc=None if diverged else final_acc - 0.01,
        checkpoint=None if diverged else f"run{i:02d}/best.pt",
        history=[] if diverged else history,
    )
    return dataclasses.asdict(record)


def write_log(directory, records):
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / RUN_LOG, "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
    return directory


def sweep_log(directory):
    """``directory/runs.jsonl`` holding a run per point of ``GRID`` and one diverged run."""
    records = [make_run(i, *combo) for i, combo in enumerate(GRID)]
    records.append(make_run(len(GRID), 1.0, 128, "sgd", status="diverged"))
    return write_log(directory, records)
