"""Test-only run records: complete ``RunRecord``s built through the schema, for run-log fixtures."""

import dataclasses

from course_lib.runlog import EpochRecord, RunRecord
from course_lib.train import TrainConfig


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
        torch_version="2.14.1", torchvision_version="0.29.1", python_version="3.11.7",
        course_lib_version="0.1.0", started_at="2026-01-01T00:00:00+00:00", wall_seconds=2.0,
        train_seconds=1.5, samples_per_second=1000.0, epochs_completed=1, resumed_at_epoch=0,
        best_epoch=1, best_val_loss=1.1, final_train_loss=1.0, final_train_acc=0.7,
        final_val_loss=1.1, final_val_acc=0.7, test_loss=1.2, test_acc=0.69,
        checkpoint="run00/best.pt", input_mean=0.13, input_std=0.31, history=[epoch_record()],
    )
    return RunRecord(**{**values, **changes})
