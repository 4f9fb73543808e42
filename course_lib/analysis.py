"""Read the run log and turn it into tables, HiPlot experiments and figures.

``course_lib.train`` appends one ``course_lib.runlog.RunRecord`` per run to ``runs.jsonl``: flat
keys for the run's config (``lr``, ``num_units``, ...), its results (``final_val_acc``,
``test_acc``, ...; accuracies are fractions in [0, 1]) and ``history``, one ``EpochRecord`` per
epoch. This module only reads it, through ``read_run_log`` (which gives every run the schema's
columns):

    runs = load_runs("runs/")            # one row per run
    epochs = epochs_frame(runs)          # one row per run x epoch, with the run's hyperparameters
    write_html(runs_experiment(runs), "runs/hiplot.html")   # standalone parallel plot
    plot_hyperparameters(runs)           # the same comparison as a static matplotlib figure
    print("\\n".join(conclusions(runs)))  # sentences computed from the numbers, not written ahead
"""

import dataclasses
from pathlib import Path

import hiplot as hip
import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.ticker import MaxNLocator, PercentFormatter

from .files import atomic_write
from .runlog import EpochRecord, read_run_log

# The config fields a sweep varies, in the order the plots show them, and the columns derived from
# them that a reader may add (lr_scale: a learning rate as a multiple of its optimiser's default,
# which lesson 8 adds to the runs it reads).
DERIVED = ("lr_scale",)
HYPERPARAMETERS = ("lr", *DERIVED, "num_units", "batch_size", "optimizer", "init", "momentum", "weight_decay",
                   "schedule", "shift", "epochs", "max_batches", "seed", "resolved_dataset")
RUN_METRICS = ("final_train_loss", "final_train_acc", "best_val_loss", "final_val_loss",
               "final_val_acc", "test_acc")
EPOCH_METRICS = ("train_loss", "train_acc", "val_loss", "val_acc")
# Why a run that did not complete has no results, by its status (every runlog.STATUSES but one).
NO_RESULT_BECAUSE = {"diverged": "it diverged", "interrupted": "it was interrupted",
                     "failed": "it failed with an error"}


def load_runs(path=None) -> pd.DataFrame:
    """The run log as a DataFrame, one row per run, in the order the runs were logged.

    Args:
        path: a ``runs.jsonl`` file or the folder holding one (default: the runs folder that
            ``course_lib.train`` writes to). A run that was resumed has a line for each part;
            only its last line, which covers the whole run, is kept.
    """
    runs = read_run_log(path)
    if runs.empty:
        raise ValueError(f"the run log in {path or 'the default runs folder'} holds no runs yet: "
                         "train first")
    return runs.drop_duplicates("run_id", keep="last").reset_index(drop=True)


def epochs_frame(runs: pd.DataFrame, hyperparameters=HYPERPARAMETERS) -> pd.DataFrame:
    """One row per (run, epoch): ``run_id``, the epoch's metrics, then the run's hyperparameters.

    The epoch's own ``lr`` and ``seconds`` become ``epoch_lr`` and ``epoch_seconds`` so that they
    do not clash with the run's ``lr``.
    """
    rows = [{"run_id": run_id, **epoch}
            for run_id, history in zip(runs["run_id"], runs["history"]) for epoch in history or []]
    table = pd.DataFrame(rows, columns=["run_id", *(f.name for f in dataclasses.fields(EpochRecord))])
    table = table.rename(columns={"lr": "epoch_lr", "seconds": "epoch_seconds"})
    keep = ["run_id", "status", *(c for c in hyperparameters if c in runs)]
    return table.merge(runs[keep], on="run_id", how="left")


def varying(frame: pd.DataFrame, columns=HYPERPARAMETERS) -> list:
    """The columns among ``columns`` that take more than one value in ``frame``."""
    return [c for c in columns if c in frame and frame[c].astype(str).nunique() > 1]


def run_view(runs: pd.DataFrame, metrics=RUN_METRICS) -> pd.DataFrame:
    """The per-run table worth reading: id, status, the hyperparameters that vary, the results."""
    return runs[["run_id", "status", *varying(runs), *(m for m in metrics if m in runs)]]


def runs_experiment(runs: pd.DataFrame, color_by: str = "final_val_acc") -> hip.Experiment:
    """A HiPlot experiment with one datapoint (one line of the parallel plot) per run."""
    return _experiment(run_view(runs), list(runs["run_id"]), [None] * len(runs), color_by)


def epochs_experiment(epochs: pd.DataFrame, color_by: str = "val_loss") -> hip.Experiment:
    """A HiPlot experiment with one datapoint per epoch; each links to the run's previous epoch,
    so HiPlot's XY view draws every run as a learning curve (epoch against validation loss)."""
    uids = [f"{run}/{epoch}" for run, epoch in zip(epochs["run_id"], epochs["epoch"])]
    first = epochs["run_id"] != epochs["run_id"].shift()
    parents = [None if start else prev for start, prev in zip(first, [None, *uids[:-1]])]
    columns = ["run_id", "epoch", *varying(epochs), *(m for m in EPOCH_METRICS if m in epochs)]
    experiment = _experiment(epochs[columns], uids, parents, color_by)
    experiment.display_data(hip.Displays.XY).update({"axis_x": "epoch", "axis_y": "val_loss"})
    return experiment


def _experiment(table: pd.DataFrame, uids, parents, color_by) -> hip.Experiment:
    experiment = hip.Experiment.from_iterable(
        {"uid": uid, "from_uid": parent, **row}
        for uid, parent, row in zip(uids, parents, table.to_dict("records")))
    if "lr" in table and (table["lr"] > 0).all() and table["lr"].nunique() > 1:
        experiment.parameters_definition["lr"].type = hip.ValueType.NUMERIC_LOG
    for name in ("optimizer", "init", "schedule", "status", "run_id", "resolved_dataset"):
        if name in table:
            experiment.parameters_definition[name].type = hip.ValueType.CATEGORICAL
    # HiPlot draws the first column of "order" rightmost: reversed, hyperparameters come first
    # (left) and results last (right), as in the table.
    experiment.display_data(hip.Displays.PARALLEL_PLOT).update(
        {"order": list(reversed(table.columns)), "hide": ["uid", "from_uid"]})
    experiment.display_data(hip.Displays.TABLE)["order"] = list(table.columns)
    experiment.colorby = color_by if color_by in table else None
    return experiment


def write_html(experiment: hip.Experiment, path) -> Path:
    """Write ``experiment`` as one standalone HTML file (HiPlot's ``to_html``) and return its path.

    The file embeds HiPlot's JavaScript and the data, so it opens offline in any browser (the
    tests check that it loads nothing else). It is written to a temporary file first and then
    renamed, so an existing report is never half overwritten.
    """
    return atomic_write(path, experiment.to_html())


def hyperparameter_effects(runs: pd.DataFrame, metric: str = "final_val_acc") -> pd.DataFrame:
    """For every hyperparameter that varies, each value's mean, best and count of ``metric``.

    Values are sorted (numbers numerically). Runs without the metric (diverged, or interrupted
    before their first epoch) are left out of the means.
    """
    parts = []
    for name in varying(runs):
        part = runs.groupby(name)[metric].agg(["mean", "max", "count"]).reset_index(names="value")
        part.insert(0, "hyperparameter", name)
        parts.append(part)
    columns = ["hyperparameter", "value", "mean", "max", "count"]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)


def effect_sizes(runs: pd.DataFrame, metric: str = "final_val_acc") -> pd.Series:
    """Per varying hyperparameter, the gap between its best and worst value's mean ``metric``;
    largest first."""
    effects = hyperparameter_effects(runs, metric).dropna(subset=["mean"])
    gaps = effects.groupby("hyperparameter", sort=False)["mean"].agg(lambda m: m.max() - m.min())
    return gaps.sort_values(ascending=False, kind="stable")


def plot_hyperparameters(runs: pd.DataFrame, metric: str = "final_val_acc"):
    """The key comparison without JavaScript: ``metric`` against each varying hyperparameter.

    One panel per hyperparameter; a dot per run, a bar at each value's mean. Returns the Figure.
    """
    effects = hyperparameter_effects(runs, metric)
    names = list(dict.fromkeys(effects["hyperparameter"]))
    fig, axes = plt.subplots(1, max(len(names), 1), figsize=(3.2 * max(len(names), 1), 3.2),
                             sharey=True, squeeze=False)
    for ax, name in zip(axes[0], names):
        rows = effects[effects["hyperparameter"] == name]
        position = {value: i for i, value in enumerate(rows["value"])}
        ax.scatter(runs[name].map(position), runs[metric], alpha=0.7, zorder=2)
        ax.scatter(range(len(rows)), rows["mean"], marker="_", s=600, color="black", zorder=3)
        ax.set_xticks(range(len(rows)), [str(v) for v in rows["value"]])
        ax.set_xlim(-0.5, len(rows) - 0.5)
        missing = int(runs[metric].isna().sum())
        ax.set_title(name if not missing else f"{name} ({missing} runs without a value)")
    axes[0][0].set_ylabel(metric.replace("_", " "))
    if metric.endswith("_acc"):
        axes[0][0].yaxis.set_major_formatter(PercentFormatter(1.0))
    fig.tight_layout()
    return fig


def plot_curves(epochs: pd.DataFrame, metrics=("train_loss", "val_loss", "val_acc"),
                color_by: str | None = None):
    """Learning curves: one panel per metric, one line per run (x: epoch). Returns the Figure.

    With ``color_by`` (a hyperparameter column), runs sharing its value share a colour, and the
    legend names the values; otherwise each line is labelled with its run id.
    """
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.2), squeeze=False)
    values = list(dict.fromkeys(epochs[color_by])) if color_by else []
    for ax, metric in zip(axes[0], metrics):
        for run_id, run in epochs.groupby("run_id", sort=False):
            if color_by:
                value = run[color_by].iloc[0]
                style = {"color": f"C{values.index(value) % 10}", "label": f"{color_by}={value}"}
            else:
                style = {"label": run_id}
            ax.plot(run["epoch"], run[metric], marker=".", alpha=0.8, **style)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(metric.replace("_", " "))
        if metric.endswith("_acc"):
            ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    if color_by:
        handles, labels = axes[0][-1].get_legend_handles_labels()
        unique = dict(zip(labels, handles))  # one entry per value, not per run
        axes[0][-1].legend(unique.values(), unique.keys())
    fig.tight_layout()
    return fig


def _fmt(metric: str, value) -> str:
    return f"{value:.1%}" if metric.endswith("_acc") else f"{value:.4g}"


def conclusions(runs: pd.DataFrame, metric: str = "final_val_acc") -> list:
    """Plain sentences read off the runs: what ran, the best run, and each hyperparameter's effect.

    Higher is better for accuracies, lower for losses. Nothing here is decided in advance: every
    number and every "best" is computed from ``runs``.
    """
    higher = not metric.endswith("_loss")
    scored = runs.dropna(subset=[metric])
    statuses = runs["status"].value_counts()
    lines = [f"{len(runs)} runs: " + ", ".join(f"{n} {s}" for s, n in statuses.items()) + "."]
    if scored.empty:
        return lines + [f"No run has a {metric}, so there is nothing to compare."]
    best = scored.loc[scored[metric].idxmax() if higher else scored[metric].idxmin()]
    settings = ", ".join(f"{name}={best[name]}" for name in varying(runs))
    line = f"Best run by {metric}: {best['run_id']} ({settings}) with {_fmt(metric, best[metric])}"
    if "test_acc" in best and pd.notna(best["test_acc"]):
        line += f"; its test accuracy is {best['test_acc']:.1%}"
    lines.append(line + ".")
    effects = hyperparameter_effects(runs, metric).dropna(subset=["mean"])
    for name in effect_sizes(runs, metric).index:
        rows = effects[effects["hyperparameter"] == name]
        top = rows.loc[rows["mean"].idxmax() if higher else rows["mean"].idxmin()]
        others = ", ".join(f"{v}: {_fmt(metric, m)}" for v, m in zip(rows["value"], rows["mean"])
                           if v != top["value"])
        lines.append(f"{name}: {top['value']} gives the {'highest' if higher else 'lowest'} mean "
                     f"{metric} ({_fmt(metric, top['mean'])} over {top['count']} runs; {others}).")
    failed = runs[runs[metric].isna()]
    for _, run in failed.iterrows():
        detail = ", ".join(f"{name}={run[name]}" for name in varying(runs))
        why = NO_RESULT_BECAUSE.get(run["status"], f"status {run['status']}")
        lines.append(f"{run['run_id']} ({detail}) has no {metric}: {why}.")
    return lines


def interaction_effects(runs: pd.DataFrame, metric: str = "final_val_acc") -> pd.Series:
    """Two-way interactions of the two-valued hyperparameters that vary, largest first (signed).

    With each value coded -1 (the smaller, or first in sorted order) and +1, the interaction of
    ``a`` and ``b`` is half the change in ``a``'s effect when ``b`` goes from -1 to +1: (effect
    of ``a`` where ``b`` is +1 - effect of ``a`` where ``b`` is -1) / 2, on the scale of
    ``effect_sizes``. It is exact when the runs hold each of the four pairings equally often.
    """
    scored = runs.dropna(subset=[metric])
    names = [n for n in varying(scored) if scored[n].nunique() == 2]
    codes = {n: scored[n].map(dict(zip(sorted(scored[n].unique()), (-1, 1)))) for n in names}
    effects = {}
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            sign = codes[a] * codes[b]
            # = mean where the codes agree - mean where they differ
            effects[f"{a} x {b}"] = (scored.loc[sign > 0, metric].mean()
                                     - scored.loc[sign < 0, metric].mean())
    series = pd.Series(effects, dtype=float, name="interaction")
    return series.reindex(series.abs().sort_values(ascending=False, kind="stable").index)
