"""``python -m course_lib train | sweep | report``: end to end in fast mode, on synthetic IDX files and
made-up run logs in tmp folders."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from pages import external_references
from records import GRID
from synthetic import mnist_data_dir

from course_lib import analysis, cli
from course_lib.config import TrainConfig
from course_lib.datasets import Split
from course_lib.models import NeuralNet
from course_lib.runlog import RUN_LOG, SUMMARY_FIELDS, RunRecord, read_run_log

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return mnist_data_dir(tmp_path_factory.mktemp("data"), 600, 200)


def _train(tmp_path, *options):
    return cli.main(["train", "--out-dir", str(tmp_path / "runs"), "--device", "cpu", "--quiet",
                     *options])


def test_train_end_to_end_fast_mode(tmp_path, data_dir, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    summary_path = tmp_path / "summary.json"
    code = _train(tmp_path, "--dataset", "mnist", "--data-dir", str(data_dir), "--epochs", "2",
                  "--max-batches", "5", "--batch-size", "32", "--num-units", "32",
                  "--summary-json", str(summary_path))
    out = capsys.readouterr().out
    assert code == 0
    summary = json.loads(summary_path.read_text())
    log = read_run_log(tmp_path / "runs")
    assert len(log) == 1
    run = log.iloc[0]
    # the record's own fields, by the record's names, then where the files are
    assert list(summary) == [*SUMMARY_FIELDS, "runs_dir", "run_log"]
    assert all(name in RunRecord.columns() for name in SUMMARY_FIELDS)
    assert {name: summary[name] for name in SUMMARY_FIELDS} == {name: run[name] for name in SUMMARY_FIELDS}
    assert summary["status"] == "completed" and summary["resolved_dataset"] == "mnist"
    assert summary["epochs"] == 2 and 0 < summary["test_acc"] <= 1 and summary["wall_seconds"] > 0
    assert summary["device_used"] == "cpu" and summary["samples_per_second"] > 0
    assert summary["runs_dir"] == str((tmp_path / "runs").resolve())
    assert summary["run_log"] == str((tmp_path / "runs" / "runs.jsonl").resolve())
    checkpoint = Path(summary["runs_dir"]) / summary["checkpoint"]
    assert checkpoint == (tmp_path / "runs" / run["run_id"] / "best.pt").resolve()
    NeuralNet(32).load_state_dict(torch.load(checkpoint, weights_only=True))
    assert run["max_batches"] == 5 and run["num_units"] == 32 and run["batch_size"] == 32
    # 2 epochs x 5 batches x 32 images
    assert run["samples_per_second"] * run["train_seconds"] == pytest.approx(320)
    # what the user reads: test accuracy, checkpoint and run-log paths (relative to the cwd)
    assert f"test accuracy: {100 * summary['test_acc']:.2f}% on mnist" in out
    assert f"checkpoint:    runs/{run['run_id']}/best.pt" in out
    assert "run log:       runs/runs.jsonl" in out


def test_help_explains_every_option_with_its_default(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["train", "--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # undo argparse's line wrapping
    for field in TrainConfig.__dataclass_fields__:
        option = "--" + field.replace("_", "-")
        assert option in text, option
        after = text.split(option + " ", 2)[-1]
        assert "(default: " in after.split(" --", 1)[0], f"{option} does not show its default"
    for option in ("--resume", "--quiet", "--summary-json"):
        assert option in text
    assert "(default: 30)" in text and "(default: auto)" in text


def test_offline_auto_trains_on_mnist_5k_after_one_warning_line(tmp_path, capsys, monkeypatch, offline):
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path / "empty"))
    code = _train(tmp_path, "--epochs", "1", "--max-batches", "2", "--summary-json",
                  str(tmp_path / "s.json"))
    err = capsys.readouterr().err
    assert code == 0
    warning_lines = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warning_lines) == 1 and "mnist-5k" in warning_lines[0]
    assert json.loads((tmp_path / "s.json").read_text())["resolved_dataset"] == "mnist-5k"
    run = read_run_log(tmp_path / "runs").iloc[0]
    assert run["dataset"] == "auto" and run["resolved_dataset"] == "mnist-5k"


def test_strict_mnist_offline_is_a_clear_error(tmp_path, capsys, offline):
    code = _train(tmp_path, "--dataset", "mnist", "--data-dir", str(tmp_path / "empty"))
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("error: MNIST is not in") and "train-images-idx3-ubyte.gz" in err
    assert not (tmp_path / "runs" / "runs.jsonl").exists()  # nothing was trained, nothing logged


def test_bad_values_name_the_option(tmp_path, capsys):
    assert _train(tmp_path, "--epochs", "0") == 2
    assert "epochs must be a positive integer, got 0" in capsys.readouterr().err
    with pytest.raises(SystemExit) as done:
        _train(tmp_path, "--optimizer", "rmsprop")
    assert done.value.code == 2 and "invalid choice: 'rmsprop'" in capsys.readouterr().err


def test_unwritable_output_paths_fail_fast_and_name_the_option(tmp_path, data_dir, capsys):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    fast = ["--dataset", "mnist", "--data-dir", str(data_dir), "--epochs", "1", "--max-batches", "2"]
    assert _train(tmp_path, *fast, "--out-dir", str(blocker / "runs")) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot write the run log and checkpoints to {blocker / 'runs'}")
    assert "--out-dir" in err
    assert _train(tmp_path, *fast, "--summary-json", str(blocker / "summary.json")) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot write the summary to {blocker}: it is a file, not a folder")
    assert not (tmp_path / "runs" / "runs.jsonl").exists()  # refused before training, not after

    assert _train(tmp_path, *fast) == 0
    capsys.readouterr()
    code = cli.main(["report", str(tmp_path / "runs"), "--figure", str(tmp_path / "ok.png"),
                     "--html", str(blocker / "runs.html")])
    assert code == 1 and "cannot write the --html file to" in capsys.readouterr().err
    assert not (tmp_path / "ok.png").exists()  # nothing written when one output is impossible
    assert blocker.read_text() == "a file, not a folder"


def test_diverging_run_exits_with_advice(tmp_path, data_dir, capsys):
    code = _train(tmp_path, "--dataset", "mnist", "--data-dir", str(data_dir), "--lr", "1e6")
    assert code == 1 and "try a lower one" in capsys.readouterr().err
    assert read_run_log(tmp_path / "runs").iloc[0]["status"] == "diverged"


def _ctrl_c_in_training_epoch(monkeypatch, n: int) -> None:
    """Make Ctrl-C arrive as training epoch ``n`` starts (epochs before it finish normally)."""
    original, epochs = Split.batches, []

    def interrupted(self, batch_size, generator=None, shift=0):
        if generator is not None:  # a training epoch
            epochs.append(1)
            if len(epochs) == n:
                raise KeyboardInterrupt
        yield from original(self, batch_size, generator, shift)

    monkeypatch.setattr(Split, "batches", interrupted)


def test_ctrl_c_then_resume_from_the_command_line(tmp_path, data_dir, capsys, monkeypatch):
    _ctrl_c_in_training_epoch(monkeypatch, 2)
    options = ("--dataset", "mnist", "--data-dir", str(data_dir), "--epochs", "2",
               "--max-batches", "3", "--num-units", "16")
    assert _train(tmp_path, *options) == 130
    err = capsys.readouterr().err
    monkeypatch.undo()
    run = read_run_log(tmp_path / "runs").iloc[0]
    assert run["status"] == "interrupted" and run["epochs_completed"] == 1
    assert err.strip().endswith(f"python -m course_lib train --resume {run['run_id']} "
                                f"--out-dir {tmp_path / 'runs'}")  # the command, ready to paste
    assert "interrupted after epoch 1" in err
    assert _train(tmp_path, "--resume", run["run_id"], "--summary-json", str(tmp_path / "s.json")) == 0
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["run_id"] == run["run_id"] and summary["status"] == "completed"
    resumed = read_run_log(tmp_path / "runs").iloc[1]
    assert resumed["epochs_completed"] == 2 and resumed["resumed_at_epoch"] == 1


def test_ctrl_c_in_the_default_runs_folder_gives_the_short_resume_command(tmp_path, data_dir, capsys,
                                                                          monkeypatch):
    _ctrl_c_in_training_epoch(monkeypatch, 2)
    monkeypatch.setenv("COURSE_RUNS_DIR", str(tmp_path / "default-runs"))
    code = cli.main(["train", "--quiet", "--device", "cpu", "--dataset", "mnist", "--data-dir",
                     str(data_dir), "--epochs", "2", "--max-batches", "2", "--num-units", "16"])
    assert code == 130
    run_id = read_run_log(tmp_path / "default-runs").iloc[0]["run_id"]
    assert capsys.readouterr().err.strip().endswith(f"python -m course_lib train --resume {run_id}")


def test_ctrl_c_in_the_first_epoch_says_there_is_nothing_to_resume(tmp_path, data_dir, capsys,
                                                                   monkeypatch):
    _ctrl_c_in_training_epoch(monkeypatch, 1)
    assert _train(tmp_path, "--dataset", "mnist", "--data-dir", str(data_dir)) == 130
    err = capsys.readouterr().err
    assert "nothing to resume" in err and "--resume" not in err


def test_ctrl_c_while_the_data_loads_is_a_clean_exit(tmp_path, data_dir, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("course_lib.train.load_data", interrupted)
    assert _train(tmp_path, "--dataset", "mnist", "--data-dir", str(data_dir)) == 130
    assert "interrupted before training started: nothing was written" in capsys.readouterr().err
    assert not (tmp_path / "runs" / RUN_LOG).exists()


def test_python_dash_m_course_lib_lists_its_commands_and_needs_one(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "course_lib", "--help"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0
    listed = re.findall(r"^    (\w+)\s+\S", done.stdout, flags=re.M)
    assert listed == ["train", "sweep", "report"]
    assert "train the course MLP" in done.stdout and "standalone HiPlot page" in done.stdout
    done = subprocess.run([sys.executable, "-m", "course_lib"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "the following arguments are required: COMMAND" in done.stderr


# --- sweep and report --------------------------------------------------------------------


def test_sweep_command_logs_one_run_per_point_and_survives_a_diverging_one(
        tmp_path, data_dir, capsys):
    out = tmp_path / "runs"
    code = cli.main(["sweep", "--dataset", "mnist", "--data-dir", str(data_dir),
                     "--out-dir", str(out), "--device", "cpu", "--quiet", "--epochs", "2",
                     "--max-batches", "3", "--batch-size", "32", "--grid", "lr=0.05,1e6",
                     "--grid", "num_units=16,32"])
    printed = capsys.readouterr().out
    assert code == 0
    runs = analysis.load_runs(out)
    assert [(r.lr, r.num_units) for r in runs.itertuples()] == [
        (0.05, 16), (0.05, 32), (1e6, 16), (1e6, 32)]
    assert set(runs["epochs"]) == {2} and set(runs["max_batches"]) == {3}
    assert list(runs["status"]) == ["completed", "completed", "diverged", "diverged"]
    assert "sweep: 4 runs over lr, num_units on mnist, 2 epochs each" in printed
    assert "[3/4] lr=1000000.0 num_units=16: diverged" in printed
    assert "4 runs: 2 completed, 2 diverged." in printed
    assert f"python -m course_lib report {out} --html {out / 'report.html'}" in printed
    # A second sweep appends to the log; its summary covers only its own runs.
    assert cli.main(["sweep", "--dataset", "mnist", "--data-dir", str(data_dir),
                     "--out-dir", str(out), "--device", "cpu", "--quiet", "--epochs", "1",
                     "--max-batches", "2", "--grid", "lr=0.05,0.01"]) == 0
    assert "2 runs: 2 completed." in capsys.readouterr().out
    assert len(analysis.load_runs(out)) == 6


def test_sweep_command_rejects_a_bad_grid_before_training(tmp_path, capsys):
    code = cli.main(["sweep", "--out-dir", str(tmp_path), "--grid", "num_units=1,2"])
    assert code == 2
    assert "num_units must be a positive integer" in capsys.readouterr().err
    assert not (tmp_path / RUN_LOG).exists()


def test_report_command_prints_the_runs_and_writes_html_and_figure(log_dir, tmp_path, capsys):
    html, epochs_html, figure = tmp_path / "r.html", tmp_path / "e.html", tmp_path / "f.png"
    code = cli.main(["report", str(log_dir), "--html", str(html), "--epochs-html",
                     str(epochs_html), "--figure", str(figure)])
    printed = capsys.readouterr().out
    assert code == 0
    for i in range(len(GRID) + 1):
        assert f"run{i:02d}" in printed
    assert "Best run by final_val_acc: run07 (lr=0.1, num_units=128, optimizer=adam)" in printed
    assert external_references(html.read_text()) == []
    assert '\\"run07\\"' in html.read_text() or '"run07"' in html.read_text()
    assert "run07/3" in epochs_html.read_text()
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_command_errors(tmp_path, log_dir, capsys):
    assert cli.main(["report", str(tmp_path / "nowhere")]) == 1
    assert "no run log at" in capsys.readouterr().err
    assert cli.main(["report", str(log_dir), "--metric", "val_accuracy"]) == 2
    err = capsys.readouterr().err
    assert "'val_accuracy' is not in the run log; choose one of" in err and "final_val_acc" in err


@pytest.mark.slow
def test_compile_trains_the_compiled_model_to_the_eager_numbers(tmp_path, data_dir, monkeypatch):
    compiled = []
    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda model, **kw: compiled.append(kw) or real_compile(model, **kw))
    options = ("--dataset", "mnist", "--data-dir", str(data_dir), "--epochs", "2", "--max-batches",
               "3", "--batch-size", "32", "--num-units", "16", "--shift", "0")
    assert _train(tmp_path, *options) == 0
    assert not compiled
    assert _train(tmp_path, *options, "--compile") == 0
    assert compiled == [{"fullgraph": True, "mode": "default"}]  # once for the whole run
    eager, with_compile = read_run_log(tmp_path / "runs").to_dict("records")
    for key in ("final_val_loss", "test_loss", "test_acc"):
        assert with_compile[key] == pytest.approx(eager[key], rel=1e-4), key


def test_reduce_overhead_needs_cuda(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert _train(tmp_path, "--compile-mode", "reduce-overhead") == 2
    assert "reduce-overhead records CUDA graphs and needs a CUDA device" in capsys.readouterr().err


def test_train_into_a_file_or_a_pipe_writes_one_line_per_epoch_not_bar_redraws(tmp_path, data_dir):
    """``make train > log 2>&1``: where nobody watches a bar, the progress is one plain line per
    epoch (no carriage returns, no terminal escape codes), then the result."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("JPY_PARENT_PID", None)
    result = subprocess.run(
        [sys.executable, "-m", "course_lib", "train", "--dataset", "mnist", "--data-dir", str(data_dir),
         "--out-dir", str(tmp_path / "runs"), "--device", "cpu", "--epochs", "3", "--max-batches", "4",
         "--num-units", "16"], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output = result.stdout.decode()
    assert result.returncode == 0, output
    assert b"\r" not in result.stdout and b"\x1b" not in result.stdout
    epochs = [line for line in output.splitlines() if line.startswith("epoch ")]
    assert [line.split(":")[0] for line in epochs] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
    assert all(re.fullmatch(r"epoch \d/3: train_acc [\d.]+  val_loss [\d.]+  val_acc [\d.]+", line)
               for line in epochs), epochs
    assert len(output.splitlines()) == 3 + 3 and len(result.stdout) < 1000  # 3 epochs, 3 result lines
