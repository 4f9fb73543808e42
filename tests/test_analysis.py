"""``course_lib.analysis``: run log -> DataFrames -> HiPlot / HTML / matplotlib / conclusions.

The tests write their own small run logs in the format ``course_lib.train`` writes (one JSON line
per run, flat config and result keys, ``history`` a list of per-epoch dicts), with metrics made
up so that every expected value is known in advance.
"""

import dataclasses
import itertools
import json

import matplotlib
import pandas as pd
import pytest
from pages import external_references
from records import GRID, make_run, write_log

from course_lib import analysis
from course_lib.runlog import RUN_LOG, STATUSES, EpochRecord, RunRecord

matplotlib.use("Agg")


def test_what_analysis_reads_is_in_the_schema():
    columns = RunRecord.columns()
    assert set(analysis.HYPERPARAMETERS) - set(analysis.DERIVED) <= set(columns)
    assert set(analysis.RUN_METRICS) <= set(columns) and not set(analysis.DERIVED) & set(columns)
    assert set(analysis.EPOCH_METRICS) <= {f.name for f in dataclasses.fields(EpochRecord)}
    assert set(analysis.NO_RESULT_BECAUSE) == set(STATUSES) - {"completed"}


@pytest.fixture
def runs(log_dir):
    return analysis.load_runs(log_dir)


def test_load_runs_reads_one_row_per_run_from_a_directory_or_a_file(log_dir):
    runs = analysis.load_runs(log_dir)
    assert len(runs) == len(GRID) + 1
    assert list(runs["run_id"]) == [f"run{i:02d}" for i in range(len(GRID) + 1)]
    assert runs.loc[0, "lr"] == 0.01 and runs.loc[0, "optimizer"] == "sgd"
    assert runs.loc[3, "final_val_acc"] == pytest.approx(0.87)
    assert pd.isna(runs.loc[8, "final_val_acc"])  # the diverged run has no result
    same = analysis.load_runs(log_dir / RUN_LOG)
    pd.testing.assert_frame_equal(runs, same)


def test_load_runs_keeps_the_last_line_of_a_resumed_run(log_dir):
    resumed = make_run(2, 0.01, 128, "sgd", epochs=5)  # run02 again, now with 5 epochs
    with open(log_dir / RUN_LOG, "a", encoding="utf-8") as f:
        f.write(json.dumps(resumed) + "\n")
    runs = analysis.load_runs(log_dir)
    assert list(runs["run_id"]).count("run02") == 1 and len(runs) == len(GRID) + 1
    assert runs.set_index("run_id").loc["run02", "epochs"] == 5
    assert len(runs.set_index("run_id").loc["run02", "history"]) == 5


def test_load_runs_errors_name_the_file_and_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no run log at .*runs\.jsonl: train"):
        analysis.load_runs(tmp_path)
    log = tmp_path / RUN_LOG
    log.write_text(json.dumps(make_run(0, 0.1, 32, "sgd")) + "\n{\"run_id\": \"trunc\n")
    with pytest.warns(UserWarning, match=r"runs\.jsonl: skipped line\(s\) \[2\]"):
        assert list(analysis.load_runs(tmp_path)["run_id"]) == ["run00"]
    log.write_text("\n")
    with pytest.raises(ValueError, match="holds no runs yet"):
        analysis.load_runs(log)


def test_epochs_frame_has_one_row_per_run_and_epoch_with_the_hyperparameters(runs):
    epochs = analysis.epochs_frame(runs)
    assert len(epochs) == len(GRID) * 3  # the diverged run has no epochs
    assert list(epochs.columns[:7]) == ["run_id", "epoch", "train_loss", "train_acc", "val_loss",
                                        "val_acc", "epoch_lr"]
    for column in ("status", "lr", "num_units", "optimizer", "batch_size"):
        assert column in epochs
    row = epochs[(epochs["run_id"] == "run03") & (epochs["epoch"] == 2)].iloc[0]
    assert row["val_acc"] == pytest.approx(0.87 - 0.05)
    assert row["train_loss"] == pytest.approx(0.5)
    assert (row["lr"], row["num_units"], row["optimizer"]) == (0.01, 128, "adam")
    assert row["epoch_lr"] == 0.01 and row["epoch_seconds"] == 0.5
    # The last epoch of every run is the run's final result.
    last = epochs.groupby("run_id").last()
    finals = runs.set_index("run_id")["final_val_acc"].dropna()
    pd.testing.assert_series_equal(last.loc[finals.index, "val_acc"], finals, check_names=False)


def test_varying_and_run_view_keep_what_differs(runs):
    assert analysis.varying(runs) == ["lr", "num_units", "optimizer"]
    view = analysis.run_view(runs)
    assert list(view.columns) == ["run_id", "status", "lr", "num_units", "optimizer",
                                  *analysis.RUN_METRICS]
    assert len(view) == len(runs)


def test_runs_experiment_has_one_datapoint_per_run_with_its_values(runs):
    experiment = analysis.runs_experiment(runs)
    assert [d.uid for d in experiment.datapoints] == list(runs["run_id"])
    assert all(d.from_uid is None for d in experiment.datapoints)
    by_id = {d.uid: d.values for d in experiment.datapoints}
    assert by_id["run05"]["lr"] == 0.1 and by_id["run05"]["num_units"] == 32
    assert by_id["run05"]["optimizer"] == "adam"
    assert by_id["run05"]["final_val_acc"] == pytest.approx(0.86)
    assert "history" not in by_id["run05"] and "started_at" not in by_id["run05"]
    assert experiment.colorby == "final_val_acc"
    assert experiment.parameters_definition["lr"].type.value == "numericlog"
    order = experiment.display_data("TABLE")["order"]
    assert order[:5] == ["run_id", "status", "lr", "num_units", "optimizer"]
    assert experiment.display_data("PARALLEL_PLOT")["order"] == order[::-1]  # drawn right to left
    experiment.validate()


def test_epochs_experiment_links_each_epoch_to_the_previous_one_of_its_run(runs):
    experiment = analysis.epochs_experiment(analysis.epochs_frame(runs))
    points = experiment.datapoints
    assert len(points) == len(GRID) * 3
    assert [(p.uid, p.from_uid) for p in points[:4]] == [
        ("run00/1", None), ("run00/2", "run00/1"), ("run00/3", "run00/2"), ("run01/1", None)]
    assert points[4].values["val_loss"] == pytest.approx(0.6)
    assert experiment.display_data("XY") == {"axis_x": "epoch", "axis_y": "val_loss"}
    experiment.validate()


def test_write_html_writes_a_standalone_page_with_every_run(runs, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "runs.html").write_text("previous report")
    path = analysis.write_html(analysis.runs_experiment(runs), tmp_path / "out" / "runs.html")
    html = path.read_text(encoding="utf-8")
    assert external_references(html) == []
    assert "hiplot.render" in html and len(html) > 1_000_000  # HiPlot's bundle is inlined
    for run_id in runs["run_id"]:
        assert f'"{run_id}"' in html or f'\\"{run_id}\\"' in html
    assert [p.name for p in path.parent.iterdir()] == ["runs.html"]  # no temporary file left


def test_external_references_finds_what_a_page_would_fetch():
    html = ('<link rel="stylesheet" href="https://cdn.example/x.css"><script src="app.js"></script>'
            '<img src="data:image/png;base64,AAAA"><a href="https://example.org">a link</a>'
            '<script>var inline = 1;</script>')
    assert external_references(html) == ["https://cdn.example/x.css", "app.js"]


def test_hyperparameter_effects_are_the_group_means(runs):
    effects = analysis.hyperparameter_effects(runs).set_index(["hyperparameter", "value"])
    # adam adds 0.05 to every sgd run in the grid: the means differ by exactly that.
    assert effects.loc[("optimizer", "adam"), "mean"] == pytest.approx(0.8 + 0.05 + 0.01 + 0.005)
    assert effects.loc[("optimizer", "sgd"), "mean"] == pytest.approx(0.8 + 0.01 + 0.005)
    assert effects.loc[("num_units", 128), "count"] == 4  # the diverged 128-unit run is left out
    assert pd.isna(effects.loc[("lr", 1.0), "mean"])
    assert list(effects.loc["lr"].index) == [0.01, 0.1, 1.0]  # sorted numerically


def test_effect_sizes_rank_the_hyperparameters(runs):
    sizes = analysis.effect_sizes(runs)
    assert list(sizes.index) == ["optimizer", "num_units", "lr"]
    assert list(sizes) == pytest.approx([0.05, 0.02, 0.01])


def test_conclusions_are_computed_from_the_runs(runs):
    lines = analysis.conclusions(runs)
    assert lines[0] == "9 runs: 8 completed, 1 diverged."
    assert lines[1] == ("Best run by final_val_acc: run07 (lr=0.1, num_units=128, optimizer=adam) "
                        "with 88.0%; its test accuracy is 87.0%.")
    # Ordered by effect size: optimizer (5 points) > num_units (2) > lr (1).
    assert lines[2].startswith("optimizer: adam gives the highest mean final_val_acc (86.5% over 4")
    assert lines[3].startswith("num_units: 128 gives the highest")
    assert lines[4].startswith("lr: 0.1 gives the highest")
    assert lines[5] == "run08 (lr=1.0, num_units=128, optimizer=sgd) has no final_val_acc: it diverged."


def test_conclusions_follow_the_data_when_it_changes(log_dir):
    # Flip the effect of the optimizer: now sgd must come out on top, with no change to the code.
    records = [json.loads(line) for line in (log_dir / RUN_LOG).read_text().splitlines()]
    for record in records:
        if record["optimizer"] == "sgd" and record["final_val_acc"] is not None:
            record["final_val_acc"] += 0.2
    write_log(log_dir, records)
    lines = analysis.conclusions(analysis.load_runs(log_dir))
    assert lines[1].startswith("Best run by final_val_acc: run06 (lr=0.1, num_units=128, optimizer=sgd)")
    assert lines[2].startswith("optimizer: sgd gives the highest")
    loss_lines = analysis.conclusions(analysis.load_runs(log_dir), metric="best_val_loss")
    assert "gives the lowest mean best_val_loss" in loss_lines[2]


def test_plot_hyperparameters_draws_one_panel_per_hyperparameter_and_a_dot_per_run(runs):
    fig = analysis.plot_hyperparameters(runs)
    assert [ax.get_title() for ax in fig.axes] == [
        "lr (1 runs without a value)", "num_units (1 runs without a value)",
        "optimizer (1 runs without a value)"]
    optimizer_ax = fig.axes[2]
    assert [t.get_text() for t in optimizer_ax.get_xticklabels()] == ["adam", "sgd"]
    dots, means = optimizer_ax.collections
    xy = dots.get_offsets()
    finite = ~pd.isna(xy[:, 1])
    assert finite.sum() == len(GRID)
    expected = runs["final_val_acc"].to_numpy()
    assert list(xy[finite, 1]) == pytest.approx(list(expected[~pd.isna(expected)]))
    assert list(xy[finite, 0]) == [1.0 if o == "sgd" else 0.0 for o, _ in
                                   zip(runs["optimizer"], expected) if not pd.isna(_)]
    assert list(means.get_offsets()[:, 1]) == pytest.approx([0.865, 0.815])
    matplotlib.pyplot.close(fig)


def test_plot_curves_draws_one_line_per_run(runs):
    epochs = analysis.epochs_frame(runs)
    fig = analysis.plot_curves(epochs, metrics=("val_loss", "val_acc"))
    assert [ax.get_title() for ax in fig.axes] == ["val loss", "val acc"]
    lines = fig.axes[1].get_lines()
    assert [line.get_label() for line in lines] == [f"run{i:02d}" for i in range(len(GRID))]
    assert list(lines[3].get_ydata()) == pytest.approx([0.77, 0.82, 0.87])
    matplotlib.pyplot.close(fig)


def test_plot_curves_can_colour_runs_by_a_hyperparameter(runs):
    fig = analysis.plot_curves(analysis.epochs_frame(runs), metrics=("val_acc",), color_by="optimizer")
    lines = fig.axes[0].get_lines()
    colours = {line.get_label(): set() for line in lines}
    for line in lines:
        colours[line.get_label()].add(line.get_color())
    assert colours == {"optimizer=sgd": {"C0"}, "optimizer=adam": {"C1"}}
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == [
        "optimizer=sgd", "optimizer=adam"]
    matplotlib.pyplot.close(fig)




def test_interaction_effects_reads_a_known_interaction():
    rows = [dict(lr=lr, optimizer=opt, num_units=u) for lr, opt, u in
            itertools.product([0.01, 0.03], ["adam", "sgd"], [32, 128])]
    runs = pd.DataFrame(rows)
    code = {"lr": runs["lr"].map({0.01: -1, 0.03: 1}), "optimizer": runs["optimizer"].map({"adam": -1, "sgd": 1})}
    runs["final_val_acc"] = 0.5 + 0.1 * code["lr"] * code["optimizer"]
    effects = analysis.interaction_effects(runs, "final_val_acc")
    assert effects.index[0] == "lr x optimizer" and effects.iloc[0] == pytest.approx(0.2)
    assert effects.drop("lr x optimizer").abs().max() == pytest.approx(0.0)
