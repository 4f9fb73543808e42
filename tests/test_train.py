"""``course_lib.train``: the loop's numbers, determinism, checkpoints, resume, Ctrl-C, NaN stop, run log.
(``TrainConfig`` and ``make_optimizer``: test_config.py; ``Checkpoint``'s file: test_checkpoint.py.)

Every run trains on a small synthetic MNIST-shaped dataset written as IDX files into a tmp data
directory, so the whole path (files -> fit -> checkpoints -> run log) runs without real data.
"""

import dataclasses
import io
import json
import math
import re
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from conftest import DEVICES
from synthetic import mnist_data_dir

from course_lib import train as train_module
from course_lib.config import TrainConfig
from course_lib.datasets import Split, load_data
from course_lib.files import NotWritable
from course_lib.models import NeuralNet
from course_lib.runlog import RUN_LOG, EpochRecord, RunRecord, read_run_log
from course_lib.train import Hooks, Interrupted, TrainingDiverged, evaluate, fit, resolve_device, train_epoch


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A data directory holding a 600/200-image synthetic 'MNIST' in torchvision's layout."""
    return mnist_data_dir(tmp_path_factory.mktemp("data"), 600, 200)


@pytest.fixture
def config(data_dir, tmp_path):
    return TrainConfig(dataset="mnist", data_dir=str(data_dir), out_dir=str(tmp_path / "runs"),
                       epochs=3, batch_size=32, num_units=32, device="cpu")


def _leftovers(folder):
    return [p.name for p in folder.rglob("*.tmp")]


def _metrics(record):
    """Everything a run computed, without its timings."""
    history = [{k: v for k, v in row.items() if k != "seconds"} for row in record.history]
    keys = ("best_epoch", "best_val_loss", "final_train_loss", "final_val_acc", "test_loss", "test_acc")
    return history, {k: getattr(record, k) for k in keys}


# ---------------------------------------------------------------------------------------------
# train_epoch and evaluate
# ---------------------------------------------------------------------------------------------


def test_evaluate_counts_every_sample_not_batch_means():
    torch.manual_seed(0)
    model = NeuralNet(16)
    split = Split(torch.randn(10, 1, 28, 28), torch.randint(0, 10, (10,)))
    logits = model(split.images)
    loss = F.cross_entropy(logits, split.labels).item()
    acc = (logits.argmax(1) == split.labels).float().mean().item()
    for batch_size in (1, 3, 4, 10):  # 3 and 4 leave a short last batch
        got_loss, got_acc = evaluate(model, split.batches(batch_size))
        assert got_loss == pytest.approx(loss, rel=1e-6) and got_acc == pytest.approx(acc)
    assert not model.training


def test_train_epoch_takes_sgd_steps_and_reports_sums():
    torch.manual_seed(0)
    model = NeuralNet(16)
    reference = NeuralNet(16)
    reference.load_state_dict(model.state_dict())
    split = Split(torch.randn(10, 1, 28, 28), torch.randint(0, 10, (10,)))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loss, acc, samples = train_epoch(model, split.batches(4), optimizer)
    assert samples == 10 and model.training
    # the same three steps by hand; loss and accuracy are weighted by batch size (4, 4, 2)
    losses, correct = [], 0
    for x, y in split.batches(4):
        out = reference(x)
        batch_loss = F.cross_entropy(out, y)
        losses.append(batch_loss.item() * len(y))
        correct += (out.argmax(1) == y).sum().item()
        reference.zero_grad()
        batch_loss.backward()
        with torch.no_grad():
            for p in reference.parameters():
                p -= 0.1 * p.grad
    assert loss == pytest.approx(sum(losses) / 10, rel=1e-5) and acc == correct / 10
    for p, q in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(p, q)


# ---------------------------------------------------------------------------------------------
# fit: files written, determinism
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
def test_fit_learns_and_leaves_a_checkpoint_and_a_log_line(config, device):
    result = fit(dataclasses.replace(config, device=device), progress=False)
    record = result.record
    out = result.out_dir
    assert record.status == "completed" and record.device_used.startswith(device)
    assert record.test_acc > 0.9  # the synthetic classes are easy: it must have learned
    assert [row["epoch"] for row in record.history] == [1, 2, 3]
    assert all(0 <= row[k] <= 1 for row in record.history for k in ("train_acc", "val_acc"))
    assert record.train_seconds == pytest.approx(sum(r["seconds"] for r in record.history))
    # 550 training images (600 minus 1/12 held out for validation), three epochs
    assert record.samples_per_second * record.train_seconds == pytest.approx(3 * 550)
    # best.pt: a plain state dict that NeuralNet loads with weights_only=True
    assert result.checkpoint == out / result.run_id / "best.pt"
    state = torch.load(result.checkpoint, weights_only=True)
    model = NeuralNet(config.num_units)
    model.load_state_dict(state)
    test = load_data("mnist", "cpu", config.data_dir).test
    assert evaluate(model, test.batches(64))[1] == pytest.approx(record.test_acc)
    last = torch.load(out / result.run_id / "last.pt", weights_only=True)
    assert last["epoch"] == 3 and last["config"]["num_units"] == config.num_units
    # the run log: one line, every config field flat at the top level
    lines = (out / RUN_LOG).read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0]) == json.loads(json.dumps(dataclasses.asdict(record)))
    for field in ("dataset", "epochs", "batch_size", "lr", "momentum", "optimizer", "num_units",
                  "seed", "device", "max_batches", "torch_version", "python_version", "wall_seconds"):
        assert hasattr(record, field)
    assert record.lr == 0.05 and record.resolved_dataset == "mnist"
    assert not _leftovers(out)


def test_same_seed_same_numbers_other_seed_other_numbers(config, tmp_path):
    first = fit(config, progress=False)
    second = fit(config, progress=False)
    assert first.run_id != second.run_id
    assert _metrics(first.record) == _metrics(second.record)
    for a, b in zip(first.model.parameters(), second.model.parameters()):
        assert torch.equal(a, b)
    assert _metrics(fit(dataclasses.replace(config, seed=1), progress=False).record) != _metrics(first.record)


def test_init_randn_is_recorded_and_starts_from_other_weights(config):
    default = fit(config, progress=False)
    randn = fit(dataclasses.replace(config, init="randn", epochs=1), progress=False)
    assert randn.record.init == "randn" and default.record.init == "default"
    # the source lesson's std-1 weights start far worse than nn.Linear's initialisation
    assert randn.record.history[0]["train_loss"] > 2 * default.record.history[0]["train_loss"]


def test_the_logged_lr_is_each_epochs_first_batch_lr(config):
    record = fit(dataclasses.replace(config, epochs=3, max_batches=2, lr=0.3), progress=False).record
    expected = [0.3 * (1 + math.cos(math.pi * t / 6)) / 2 for t in (0, 2, 4)]  # 3 epochs x 2 batches
    assert [row["lr"] for row in record.history] == pytest.approx(expected)
    assert record.lr == 0.3


def test_the_default_shift_moves_every_training_batch_and_no_evaluation_batch(config, monkeypatch):
    assert TrainConfig().shift == 1 and config.shift == 1
    original, calls = Split.batches, []

    def spy(self, batch_size, generator=None, shift=0):
        calls.append(("train" if generator is not None else "eval", shift))
        return original(self, batch_size, generator, shift)

    monkeypatch.setattr(Split, "batches", spy)
    shifted = fit(dataclasses.replace(config, epochs=2, max_batches=3), progress=False)
    assert calls == [("train", 1), ("eval", 0)] * 2 + [("eval", 0)]  # 2 epochs, then the test
    monkeypatch.undo()
    unshifted = fit(dataclasses.replace(config, epochs=2, max_batches=3, shift=0), progress=False)
    assert shifted.record.history[0]["train_loss"] != unshifted.record.history[0]["train_loss"]


def test_max_batches_is_the_fast_mode(config):
    record = fit(dataclasses.replace(config, max_batches=2, epochs=2), progress=False).record
    assert record.samples_per_second * record.train_seconds == pytest.approx(2 * 2 * 32)
    assert record.max_batches == 2


# ---------------------------------------------------------------------------------------------
# Ctrl-C and resume
# ---------------------------------------------------------------------------------------------


def _interrupt_after(monkeypatch, n_batches):
    """Make the training batches raise KeyboardInterrupt after ``n_batches`` batches in total."""
    original = Split.batches
    count = {"n": 0}

    def batches(self, batch_size, generator=None, shift=0):
        for batch in original(self, batch_size, generator, shift):
            if generator is not None:
                count["n"] += 1
                if count["n"] > n_batches:
                    raise KeyboardInterrupt
            yield batch

    monkeypatch.setattr(Split, "batches", batches)


def test_ctrl_c_mid_epoch_keeps_checkpoint_and_log_and_resume_finishes_the_same(config, monkeypatch):
    uninterrupted = fit(config, progress=False)

    _interrupt_after(monkeypatch, 18 + 5)  # 550 / 32 -> 18 batches per epoch: stop in epoch 2
    with pytest.raises(Interrupted) as stopped:
        fit(config, progress=False)
    monkeypatch.undo()
    assert isinstance(stopped.value, KeyboardInterrupt)  # whoever catches Ctrl-C still catches it
    assert stopped.value.resumable and stopped.value.epochs_done == 1
    out = uninterrupted.out_dir
    log = read_run_log(out)
    interrupted = log.iloc[-1]
    assert interrupted["status"] == "interrupted" and interrupted["epochs_completed"] == 1
    assert interrupted["test_acc"] is None or math.isnan(interrupted["test_acc"])
    run_dir = out / interrupted["run_id"]
    assert stopped.value.run_id == interrupted["run_id"] and stopped.value.out_dir == out
    assert interrupted["checkpoint"] == f"{interrupted['run_id']}/best.pt"
    NeuralNet(config.num_units).load_state_dict(torch.load(run_dir / "best.pt", weights_only=True))
    assert torch.load(run_dir / "last.pt", weights_only=True)["epoch"] == 1
    assert not _leftovers(out)

    resumed = fit(config, resume=interrupted["run_id"], progress=False)
    assert resumed.run_id == interrupted["run_id"] and resumed.record.resumed_at_epoch == 1
    assert resumed.record.status == "completed"
    assert _metrics(resumed.record) == _metrics(uninterrupted.record)
    for a, b in zip(resumed.model.parameters(), uninterrupted.model.parameters()):
        assert torch.equal(a, b)
    assert list(read_run_log(out)["status"]) == ["completed", "interrupted", "completed"]


def test_ctrl_c_before_the_first_epoch_ends_logs_no_checkpoint(config, monkeypatch):
    _interrupt_after(monkeypatch, 3)
    with pytest.raises(Interrupted) as stopped:
        fit(config, progress=False)
    assert not stopped.value.resumable and stopped.value.epochs_done == 0
    record = read_run_log(config.out_dir).iloc[-1]
    assert record["status"] == "interrupted" and record["checkpoint"] is None
    with pytest.raises(FileNotFoundError, match="first epoch"):
        fit(config, resume=record["run_id"], progress=False)


def test_resume_accepts_a_folder_or_the_last_checkpoint(config):
    first = fit(dataclasses.replace(config, epochs=1), progress=False)
    run_dir = first.out_dir / first.run_id
    for target in (run_dir, run_dir / "last.pt"):
        again = fit(resume=target, progress=False)  # nothing left to train: it only tests again
        assert again.record.epochs_completed == 1 and again.test_acc == first.test_acc


# ---------------------------------------------------------------------------------------------
# NaN stop
# ---------------------------------------------------------------------------------------------


def test_a_diverging_run_stops_and_suggests_a_lower_learning_rate(config):
    config = dataclasses.replace(config, lr=1e6, epochs=5)
    with pytest.raises(TrainingDiverged) as err:
        fit(config, progress=False)
    message = str(err.value)
    assert "epoch 1" in message and "too high" in message and "--lr 1e+05" in message
    assert "sgd's default is 0.05" in message
    record = read_run_log(config.out_dir).iloc[-1]
    assert record["status"] == "diverged" and record["epochs_completed"] == 0  # stopped at once


def test_nan_in_the_data_stops_the_run(config, monkeypatch):
    original = load_data

    def poisoned(*args, **kwargs):
        d = original(*args, **kwargs)
        d.train.images[:] = float("nan")
        return d

    monkeypatch.setattr("course_lib.train.load_data", poisoned)
    with pytest.raises(TrainingDiverged, match="nan"):
        fit(config, progress=False)


def test_no_finite_validation_loss_is_a_diverged_run(config):
    data = load_data("mnist", "cpu", config.data_dir)
    data.val.images[:] = float("nan")  # training is fine; every validation loss is NaN
    with pytest.raises(TrainingDiverged, match="no epoch gave a finite validation loss"):
        fit(dataclasses.replace(config, epochs=2, max_batches=2), data=data, progress=False)
    record = read_run_log(config.out_dir).iloc[-1]
    assert record["status"] == "diverged" and record["epochs_completed"] == 2
    assert record["best_epoch"] is None or math.isnan(record["best_epoch"])
    assert record["checkpoint"] is None and pd.isna(record["test_acc"])


def test_an_error_during_the_run_is_logged_as_failed_and_raised(config):
    def broken(row, model):
        raise RuntimeError("a bug in an epoch callback")

    with pytest.raises(RuntimeError, match="a bug in an epoch callback"):
        fit(dataclasses.replace(config, epochs=2, max_batches=2), progress=False, hooks=Hooks(on_epoch=broken))
    record = read_run_log(config.out_dir).iloc[-1]
    assert record["status"] == "failed" and record["epochs_completed"] == 1
    assert (Path(config.out_dir) / record["run_id"] / "last.pt").is_file()  # it can be resumed


# ---------------------------------------------------------------------------------------------
# Hooks: what a data-parallel run changes
# ---------------------------------------------------------------------------------------------


def test_a_process_that_does_not_write_leaves_no_file_and_still_tests_the_best_epoch(config):
    seen = []

    def evaluate_and_note(model, split):
        seen.append(len(split))
        return train_module.evaluate_split(model, split)

    hooks = Hooks(should_write=False, evaluate=evaluate_and_note)
    result = fit(dataclasses.replace(config, epochs=2, max_batches=2), progress=False, hooks=hooks)
    assert not Path(config.out_dir).exists()
    assert result.record.status == "completed" and result.record.epochs_completed == 2
    assert seen == [50, 50, 200]  # validation after each epoch, then the test split
    test = load_data("mnist", "cpu", config.data_dir).test
    assert evaluate(result.model, test.batches(64))[1] == pytest.approx(result.test_acc)


def test_the_batch_source_and_the_wrapped_model_are_what_trains(config):
    sizes, wrapped = [], []

    def half_batches(split, config, generator, steps):  # e.g. one process's half of each batch
        for images, labels in train_module.shuffled_batches(split, config, generator, steps):
            sizes.append(len(labels[::2]))
            yield images[::2], labels[::2]

    def wrap(model):
        wrapped.append(model)
        return model

    hooks = Hooks(batches=half_batches, wrap=wrap)
    result = fit(dataclasses.replace(config, epochs=2, max_batches=3), progress=False, hooks=hooks)
    assert sizes == [16] * 6 and len(wrapped) == 2 and wrapped[0] is result.model
    assert result.record.samples_per_second * result.record.train_seconds == pytest.approx(6 * 16)


# ---------------------------------------------------------------------------------------------
# What a run writes: its run-log line (its checkpoint: test_checkpoint.py)
# ---------------------------------------------------------------------------------------------


def test_the_line_fit_writes_has_exactly_the_schemas_fields(config):
    result = fit(dataclasses.replace(config, epochs=2, max_batches=2), progress=False)
    line = json.loads((result.out_dir / RUN_LOG).read_text())
    assert sorted(line) == sorted(RunRecord.columns())
    assert [sorted(epoch) for epoch in line["history"]] == \
        [sorted(f.name for f in dataclasses.fields(EpochRecord))] * 2
    assert line == json.loads(json.dumps(dataclasses.asdict(result.record)))


# ---------------------------------------------------------------------------------------------
# Device
# ---------------------------------------------------------------------------------------------


def test_device_is_chosen_once_and_missing_cuda_is_an_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError, match="cuda.*is_available"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        resolve_device("gpu")


def test_an_unwritable_runs_folder_is_found_before_any_training(config, tmp_path, monkeypatch):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the runs folder should go")

    def must_not_run(*args, **kwargs):
        raise AssertionError("data was loaded / training started before the folder was checked")

    monkeypatch.setattr(train_module, "load_data", must_not_run)
    monkeypatch.setattr(train_module, "train_epoch", must_not_run)
    bad = dataclasses.replace(config, out_dir=str(blocker / "runs"))
    with pytest.raises(NotWritable, match="cannot write the run log and checkpoints to .*blocker.runs.*--out-dir"):
        fit(bad, progress=False)
    assert blocker.read_text() == "a file where the runs folder should go"




def test_progress_is_bars_on_a_terminal_and_one_line_per_epoch_elsewhere(config, monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    for stream, bars in ((Terminal(), True), (io.StringIO(), False)):
        monkeypatch.setattr(sys, "stderr", stream)
        fit(dataclasses.replace(config, epochs=2, max_batches=2), progress=True)
        text = stream.getvalue()
        assert ("\r" in text) is bars, text
        lines = re.findall(r"^epoch (\d)/2: train_acc [\d.]+  val_loss [\d.]+  val_acc [\d.]+$", text, re.M)
        assert lines == ([] if bars else ["1", "2"]), text
