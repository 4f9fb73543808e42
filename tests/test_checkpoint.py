"""``course_lib.checkpoint``: what ``last.pt`` holds and reads back (also a file in today's layout),
where a resume finds it, and how a new run is named."""

import dataclasses
import math
import re
from datetime import datetime, timezone

import pytest
import torch
from synthetic import mnist_data_dir

from course_lib import checkpoint
from course_lib.checkpoint import LAST, Checkpoint, Progress, find_resume, new_run_id
from course_lib.config import TrainConfig
from course_lib.models import NeuralNet
from course_lib.runlog import EpochRecord, RunRecord
from course_lib.train import fit

# last.pt's keys: Progress's fields, then the config, the resolved dataset and the states. A file
# written before a change to this layout must still resume, so a change here needs a migration.
LAYOUT = ["run_id", "epoch", "history", "best_epoch", "best_val_loss", "samples", "train_seconds",
          "wall_seconds", "config", "resolved_dataset", "model", "optimizer", "scheduler", "generator",
          "torch_rng"]


def test_last_checkpoint_saves_and_loads_the_whole_state(tmp_path):
    data_dir = mnist_data_dir(tmp_path / "data", 600, 200)
    config = TrainConfig(dataset="mnist", data_dir=str(data_dir), out_dir=str(tmp_path / "runs"),
                         epochs=2, max_batches=3, batch_size=32, num_units=32, device="cpu")
    result = fit(config, progress=False)
    assert list(torch.load(result.out_dir / result.run_id / LAST, weights_only=True)) == LAYOUT
    saved = torch.load(result.out_dir / result.run_id / LAST, weights_only=True)["config"]
    assert list(saved) == [c for c in RunRecord.columns() if c in saved]  # the record's layout
    assert saved == {k: v for k, v in dataclasses.asdict(result.record).items() if k in saved}
    last = Checkpoint.load(result.out_dir / result.run_id / "last.pt")
    assert last.config == dataclasses.replace(config, lr=0.05)  # lr resolved, as the record has it
    assert last.dataset == "mnist" and last.progress.run_id == result.run_id
    assert last.progress.epoch == 2 and last.progress.history == result.record.history
    assert last.progress.samples == 2 * 3 * 32
    assert sorted(last.states) == ["generator", "model", "optimizer", "scheduler", "torch_rng"]
    last.save(result.out_dir / "copy.pt")
    again = Checkpoint.load(result.out_dir / "copy.pt")
    assert again.progress == last.progress and again.config == last.config
    assert all(torch.equal(again.states["model"][k], v) for k, v in last.states["model"].items())


# A last.pt's config as course_lib 0.1.0 wrote it (dataclasses.asdict of its TrainConfig), key by
# key: written out here, not rebuilt from today's TrainConfig, so that renaming or removing a
# field of TrainConfig makes the tests below fail instead of following along.
CONFIG_0_1_0 = {"dataset": "mnist", "epochs": 3, "batch_size": 128, "lr": None, "momentum": 0.9,
                "optimizer": "sgd", "weight_decay": 0.0, "schedule": "cosine", "shift": 1,
                "num_units": 4, "init": "default", "seed": 0, "device": "auto", "max_batches": None,
                "data_dir": None, "out_dir": None}


def _last_pt(path, config: dict):
    """A last.pt in the layout of course_lib 0.1.0 holding ``config``."""
    model = NeuralNet(4)
    epoch = {"epoch": 1, "train_loss": 2.0, "train_acc": 0.3, "val_loss": 2.1, "val_acc": 0.25,
             "lr": 0.05, "seconds": 0.5}
    saved = {"run_id": "20260101-000000-abcdef", "epoch": 1, "history": [epoch], "best_epoch": 1,
             "best_val_loss": 2.1, "samples": 96, "train_seconds": 0.5, "wall_seconds": 0.75,
             "config": config, "resolved_dataset": "mnist", "model": model.state_dict(),
             "optimizer": {"state": {}}, "scheduler": {"last_epoch": 3},
             "generator": torch.Generator().get_state(), "torch_rng": torch.get_rng_state()}
    assert list(saved) == LAYOUT
    torch.save(saved, path)
    return epoch


def test_a_last_pt_written_by_0_1_0_loads(tmp_path):
    epoch = _last_pt(tmp_path / LAST, CONFIG_0_1_0)
    last = Checkpoint.load(tmp_path / LAST)
    assert last.config == TrainConfig(dataset="mnist", epochs=3, num_units=4) and last.dataset == "mnist"
    assert last.progress == Progress("20260101-000000-abcdef", 1, [epoch], 1, 2.1, 96, 0.5, 0.75)
    assert sorted(last.states) == ["generator", "model", "optimizer", "scheduler", "torch_rng"]
    assert last.states["scheduler"] == {"last_epoch": 3}


@pytest.mark.parametrize("old, new", [("num_units", "hidden_units"), ("shift", None)])
def test_a_config_field_renamed_or_removed_since_is_named(tmp_path, old, new):
    """A checkpoint written before a field was renamed (or removed) is a ValueError naming it."""
    config = dict(CONFIG_0_1_0)
    if new is not None:  # written by a version where the field had this other name
        config[new] = config.pop(old)
    else:  # written by a version with a field that no longer exists
        config["max_shift"] = config[old]
    _last_pt(tmp_path / LAST, config)
    unknown = new or "max_shift"
    with pytest.raises(ValueError, match=f"checkpoint .*last.pt: its config has '{unknown}', not a "
                                         "field of TrainConfig any more .renamed or removed"):
        Checkpoint.load(tmp_path / LAST)


def test_progress_counts_epochs_and_keeps_the_lowest_validation_loss():
    progress = Progress("run")
    rows = [EpochRecord(e, 1.0, 0.5, val, 0.5, 0.1, 2.0) for e, val in ((1, 0.9), (2, 0.7), (3, 0.8))]
    assert [progress.add(row, 10) for row in rows] == [True, True, False]
    assert (progress.epoch, progress.samples, progress.train_seconds) == (3, 30, 6.0)
    assert (progress.best_epoch, progress.best_val_loss) == (2, 0.7)
    assert [row["val_loss"] for row in progress.history] == [0.9, 0.7, 0.8]
    assert not Progress("nan").add(EpochRecord(1, 1.0, 0.5, math.nan, 0.5, 0.1, 2.0), 10)


def test_find_resume_takes_the_file_its_folder_or_a_run_id(tmp_path):
    run_dir = tmp_path / "runs" / "run-1"
    run_dir.mkdir(parents=True)
    (run_dir / LAST).write_bytes(b"")
    for resume in (run_dir / LAST, run_dir, str(run_dir), "run-1"):
        assert find_resume(resume, tmp_path / "runs") == run_dir / LAST
    with pytest.raises(FileNotFoundError, match="nothing to resume at 'run-2'.*first epoch"):
        find_resume("run-2", tmp_path / "runs")


def test_a_new_run_id_is_the_utc_time_and_a_suffix_not_taken_yet(tmp_path, monkeypatch):
    class Frozen(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)

    suffixes = iter(["aaaaaa", "aaaaaa", "bbbbbb"])
    monkeypatch.setattr(checkpoint, "datetime", Frozen)
    monkeypatch.setattr(checkpoint.secrets, "token_hex", lambda n: next(suffixes))
    first = new_run_id(tmp_path)
    assert first == "20260102-030405-aaaaaa"
    (tmp_path / first).mkdir()
    assert new_run_id(tmp_path) == "20260102-030405-bbbbbb"  # the taken one is skipped
    monkeypatch.undo()
    assert re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{6}", new_run_id(tmp_path))
