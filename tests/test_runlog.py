"""``course_lib.runlog``: the run-record schema, the run log (written, cut, read back, older
lines) and atomic files."""

import dataclasses
import json
import os
from pathlib import Path

import pandas as pd
import pytest
from records import epoch_record, run_record

from course_lib.config import TrainConfig
from course_lib.files import NotWritable, atomic_write
from course_lib.runlog import RUN_LOG, EpochRecord, RunRecord, append_run_log, read_run_log

FIXTURES = Path(__file__).resolve().parent / "fixtures"


# ---------------------------------------------------------------------------------------------
# The schema
# ---------------------------------------------------------------------------------------------


def test_the_record_declares_every_trainconfig_field():
    config = [f.name for f in dataclasses.fields(TrainConfig)]
    columns = RunRecord.columns()
    assert [c for c in columns if c in config] == config  # all of them, in TrainConfig's order
    assert columns[:2] == ["run_id", "status"] and columns[-1] == "history"


def test_a_record_cannot_hold_an_undeclared_field_nor_miss_a_declared_one():
    values = dataclasses.asdict(run_record())
    with pytest.raises(TypeError, match="unexpected keyword argument 'gpu_count'"):
        RunRecord(**values, gpu_count=2)
    del values["test_acc"]
    with pytest.raises(TypeError, match="missing 1 required positional argument: 'test_acc'"):
        RunRecord(**values)
    with pytest.raises(TypeError, match="'batch_loss'"):
        epoch_record(batch_loss=1.0)


def test_todays_run_log_format_still_loads():
    """A runs.jsonl written by course_lib 0.1.0 before the schema existed (a completed SGD run, a
    diverged one, a completed Adam run): every line reads with the schema's columns, no warning."""
    lines = [json.loads(line) for line in (FIXTURES / "runs_0.1.0.jsonl").read_text().splitlines()]
    added = {"world_size", "backend", "devices"}  # since 0.1.0: training on several processes
    assert all(set(line) == set(RunRecord.columns()) - added for line in lines)
    runs = read_run_log(FIXTURES / "runs_0.1.0.jsonl")
    assert list(runs.columns) == RunRecord.columns() and runs["world_size"].isna().all()
    assert list(runs["status"]) == ["completed", "diverged", "completed"]
    assert list(runs["optimizer"]) == ["sgd", "sgd", "adam"]
    assert runs["test_acc"][0] == pytest.approx(0.3) and pd.isna(runs["test_acc"][1])
    for history in runs["history"]:
        assert all(set(epoch) == {f.name for f in dataclasses.fields(EpochRecord)} for epoch in history)
    assert [e["epoch"] for e in runs["history"][2]] == [1, 2]


def test_an_older_line_without_a_field_reads_as_null_and_an_unknown_key_is_named(tmp_path):
    full = dataclasses.asdict(run_record(run_id="new"))
    older = {k: v for k, v in full.items() if k not in ("weight_decay", "input_std")} | {"run_id": "old"}
    newer = {**full, "run_id": "other", "gpu_count": 2}
    (tmp_path / RUN_LOG).write_text("".join(json.dumps(r) + "\n" for r in (older, full, newer)))
    with pytest.warns(UserWarning, match=r"left out \['gpu_count'\], not fields of .*RunRecord"):
        runs = read_run_log(tmp_path)
    assert list(runs["run_id"]) == ["old", "new", "other"] and "gpu_count" not in runs
    assert runs["weight_decay"].isna().tolist() == [True, False, False]
    assert runs["input_std"][1] == pytest.approx(0.31)


# ---------------------------------------------------------------------------------------------
# The run log
# ---------------------------------------------------------------------------------------------


def test_run_log_survives_a_cut_line_and_pandas_reads_it(tmp_path):
    log = tmp_path / RUN_LOG
    append_run_log(log, run_record(run_id="a", test_acc=0.5, history=[epoch_record()]))
    with open(log, "a") as f:
        f.write('{"run_id": "b", "test_a')  # a run killed in the middle of its line
    append_run_log(log, run_record(run_id="c", test_acc=float("nan"), best_val_loss=float("inf"), history=[]))
    with pytest.warns(UserWarning, match=r"skipped line\(s\) \[2\]"):
        runs = read_run_log(tmp_path)
    assert list(runs["run_id"]) == ["a", "c"]
    assert runs["history"][0] == [epoch_record()] and pd.isna(runs["test_acc"][1])  # NaN -> null
    assert pd.isna(runs["best_val_loss"][1])  # infinity -> null
    log.write_text("\n".join(log.read_text().splitlines()[::2]) + "\n")  # drop the cut line
    assert list(pd.read_json(log, lines=True)["run_id"]) == ["a", "c"]


def test_read_run_log_without_a_log_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="train a model first"):
        read_run_log(tmp_path)


def test_read_run_log_defaults_to_the_runs_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_RUNS_DIR", str(tmp_path))
    append_run_log(tmp_path / RUN_LOG, run_record(run_id="here"))
    assert list(read_run_log()["run_id"]) == ["here"]


# ---------------------------------------------------------------------------------------------
# Atomic files
# ---------------------------------------------------------------------------------------------


def test_ctrl_c_while_writing_keeps_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "best.pt"
    atomic_write(path, b"old")

    def interrupted_fsync(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted_fsync)
    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, b"new")
    assert path.read_bytes() == b"old" and list(tmp_path.iterdir()) == [path]


def test_atomic_write_gives_usual_permissions_and_keeps_existing_ones(tmp_path):
    umask = os.umask(0o022)
    try:
        new = atomic_write(tmp_path / "new.txt", "text is written as UTF-8: é")
        assert new.read_text(encoding="utf-8") == "text is written as UTF-8: é"
        assert new.stat().st_mode & 0o777 == 0o644  # not the temporary file's owner-only 0o600
        os.chmod(new, 0o640)
        atomic_write(new, b"replaced")
        assert new.read_bytes() == b"replaced" and new.stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(umask)
    assert [p.name for p in tmp_path.iterdir()] == ["new.txt"]  # no temporary file left behind


def test_atomic_write_to_an_impossible_path_names_it_and_leaves_nothing(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_bytes(b"keep me")
    with pytest.raises(NotWritable, match=r"cannot write .*blocker.sub.x\.json"):
        atomic_write(blocker / "sub" / "x.json", "{}")
    assert blocker.read_bytes() == b"keep me" and sorted(p.name for p in tmp_path.iterdir()) == ["blocker"]


def test_a_record_with_an_unknown_status_is_refused():
    with pytest.raises(ValueError, match="status must be one of completed, interrupted, diverged, failed, got 'done'"):
        run_record(status="done")
