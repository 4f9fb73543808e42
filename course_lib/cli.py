"""``python -m course_lib train | sweep | report`` (also the ``course-lib`` script).

``build_parser`` lists the three commands. Each has a function that adds its options and sets
``run``, the function that takes the parsed arguments and returns the exit code. Under torchrun,
``train`` joins the process group (``course_lib.distributed.start``) and hands ``fit`` the
group's ``parallel_hooks``.
"""

import argparse
import dataclasses
import functools
import io
import json
import os
import shlex
import sys
import warnings
from pathlib import Path

import pandas as pd
import torch

from . import distributed, runlog
from .config import DEFAULT_LR, OPTIMIZERS, SCHEDULES, TrainConfig
from .datasets import DATASETS, DatasetUnavailable, load_data, load_raw
from .device import resolve_device
from .files import NotWritable, atomic_write, writable_dir
from .idx import DataError
from .models import INITS
from .paths import resolve_out_dir
from .runlog import RUN_LOG, read_run_log
from .sweep import SWEEP_GRID, parse_grid, sweep_points
from .train import Hooks, Interrupted, TrainingDiverged, fit

# course_lib.analysis (hiplot, matplotlib: slow to import) is imported by sweep and report only.


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m course_lib",
        description="Linear Layer from Scratch: train and study the course's MLP.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text, add_options in (
        ("train", "train the course MLP (NeuralNet from the custom Linear) and test it", _train),
        ("sweep", "train every configuration of a grid (or a balanced fraction); each run is "
                  "one line of the run log", _sweep),
        ("report", "summarise a run log: a table of the runs, conclusions drawn from them, and "
                   "a standalone HiPlot page", _report),
    ):
        add_options(sub.add_parser(name, help=help_text, description=help_text,
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter))
    return parser


def main(argv=None) -> int:
    """Run a command; return its exit code (0 success, 1 failure, 2 bad usage, 130 Ctrl-C)."""
    args = build_parser().parse_args(argv)
    with warnings.catch_warnings():
        warnings.showwarning = _one_line_warning
        return args.run(args)


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    print(f"warning: {message}", file=sys.stderr if file is None else file)


def _display(path: Path) -> str:
    """``path`` relative to the working directory when it lies inside it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------------------------
# train
# --------------------------------------------------------------------------------------------


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """One option per ``TrainConfig`` field, with the dataclass's defaults (``sweep`` reuses it)."""
    d = TrainConfig()
    lrs = ", ".join(f"{k} {v}" for k, v in DEFAULT_LR.items())
    add = parser.add_argument
    add("--dataset", choices=DATASETS, default=d.dataset,
        help="auto: full MNIST if present or downloadable, else mnist-5k (with a warning)")
    add("--epochs", type=int, default=d.epochs, help="passes over the training split")
    add("--batch-size", type=int, default=d.batch_size, help="training samples per step")
    add("--lr", type=float, default=d.lr, help=f"peak learning rate; default per optimizer: {lrs}")
    add("--momentum", type=float, default=d.momentum, help="SGD's (Nesterov) momentum; Adam ignores it")
    add("--optimizer", choices=OPTIMIZERS, default=d.optimizer, help="the update rule")
    add("--weight-decay", type=float, default=d.weight_decay, help="L2 penalty on the weights")
    add("--schedule", choices=SCHEDULES, default=d.schedule,
        help="learning rate over the run: cosine decay to 0 after every batch, or constant")
    add("--shift", type=int, default=d.shift,
        help="augmentation: move each training batch by up to this many pixels (0: off)")
    add("--num-units", type=int, default=d.num_units,
        help="width of NeuralNet's first hidden layer (the second is half of it)")
    add("--init", choices=INITS, default=d.init,
        help="default: nn.Linear's uniform initialisation; randn: every parameter from N(0, 1), "
             "the source lesson's mistake (training stalls)")
    add("--seed", type=int, default=d.seed, help="seeds the weights and the batch order")
    add("--device", default=d.device,
        help="auto (CUDA, then Apple's MPS, then the CPU), cpu, cuda, cuda:N or mps")
    add("--max-batches", type=int, default=d.max_batches,
        help="fast mode: at most this many batches per epoch (None: all)")
    add("--data-dir", default=d.data_dir,
        help="where datasets live (None: $COURSE_DATA_DIR, else the repository's data/)")
    add("--out-dir", default=d.out_dir,
        help=f"where {RUN_LOG} and checkpoints go (None: $COURSE_RUNS_DIR, else the repository's runs/)")


def config_from_args(args: argparse.Namespace):
    """The ``TrainConfig`` that ``add_config_arguments``'s options describe."""
    return TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)})


def _train(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--resume", metavar="RUN_ID_OR_PATH", default=None,
                        help="continue an interrupted run (its run id, folder or last.pt) with "
                             "its saved settings; the options above are then ignored, except "
                             "--out-dir, where a run id is looked up")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress (else bars on a terminal, one line per epoch into a file or pipe)")
    parser.add_argument("--summary-json", metavar="PATH", default=None,
                        help="also write the results (test accuracy, checkpoint, speed: the run "
                             "record's fields, by their names) to this JSON file")
    parser.add_argument("--backend", choices=("auto", "gloo", "nccl"), default="auto",
                        help="under torchrun: how the processes talk (auto: nccl on CUDA, gloo on the CPU)")
    parser.add_argument("--compile", action="store_true",
                        help="train the torch.compile'd model (one graph, fullgraph=True): the same "
                             "numbers, after a first step that compiles for some seconds")
    parser.add_argument("--compile-mode", default=None,
                        choices=["default", "reduce-overhead", "max-autotune"],
                        help="torch.compile's mode (implies --compile); reduce-overhead replays "
                             "CUDA graphs and needs a CUDA device")
    parser.set_defaults(run=_run_train)


def _compile_hooks(args):
    """``Hooks`` that train the ``torch.compile``d model (``--compile``), or ``None``."""
    if not (args.compile or args.compile_mode):
        return None
    mode = args.compile_mode or "default"
    if mode == "reduce-overhead" and resolve_device(args.device).type != "cuda":
        raise ValueError(f"--compile-mode reduce-overhead records CUDA graphs and needs a CUDA "
                         f"device, got --device {args.device}; use --compile on this machine")
    # One compiled module for the whole run: fit asks for the wrapped model every epoch.
    return Hooks(wrap=functools.cache(lambda model: torch.compile(model, fullgraph=True, mode=mode)))


def _run_train(args) -> int:
    """``fit`` in this process, or in this process's place among those torchrun started."""
    main_rank = os.environ.get("RANK", "0") == "0"  # the others print nothing but their own errors
    try:
        group = distributed.start(args.device, args.backend)
    except ValueError as e:
        if main_rank:
            print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        with warnings.catch_warnings():
            if not main_rank:
                warnings.simplefilter("ignore")
            return _fit_and_report(args, group)
    finally:
        distributed.stop()


def _prepare(args, group):
    """The run's config and hooks, with every check that can fail before any training."""
    config = config_from_args(args)
    if args.summary_json and (group is None or group.is_main):  # found out now, not after training
        writable_dir(Path(args.summary_json).parent, "the summary", "--summary-json")
    hooks = _compile_hooks(args)
    if group is None:
        return config, hooks
    if hooks is not None:
        raise ValueError("--compile with torchrun is not supported yet (DDP around a "
                         "compiled model is untested here): drop --compile, or run one process")
    if args.resume is None:
        distributed.check_batch_size(config.batch_size, group)
        # the device the processes agreed on (auto could mean MPS, which DDP cannot use)
        config = dataclasses.replace(config, device=group.device.type)
        if config.dataset != "mnist-5k":  # a download: once per machine, not at once
            distributed.local_first(lambda: load_raw(config.dataset, config.data_dir), group)
    return config, distributed.parallel_hooks(group)


def _fit_and_report(args, group) -> int:
    main_rank = group is None or group.is_main
    try:
        config, hooks = _prepare(args, group)
        result = fit(config, resume=args.resume, progress=main_rank and not args.quiet, hooks=hooks)
    except (ValueError, FileNotFoundError, NotWritable, DataError, DatasetUnavailable,
            TrainingDiverged) as e:  # the same on every process: said once
        if main_rank:
            print(f"error: {e}", file=sys.stderr)
        return 2 if isinstance(e, ValueError) else 1
    except Interrupted as e:
        if main_rank:
            print(f"\n{_interrupted(e, group)}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:  # before the run began (loading the data): nothing was written
        if main_rank:
            print("\ninterrupted before training started: nothing was written; run the same "
                  "command again to start", file=sys.stderr)
        return 130
    except RuntimeError as e:  # each process says what it saw when another one is lost
        if group is None or not distributed.is_communication_error(e):
            raise
        print(f"error: {distributed.lost(e)}", file=sys.stderr)
        return 1
    if main_rank:
        _print_result(result, args.summary_json)
    return 0


def _print_result(result, summary_json) -> None:
    """The three lines ``train`` ends with, and the summary JSON when asked for."""
    record = result.record
    print(f"test accuracy: {100 * record.test_acc:.2f}% on {record.resolved_dataset} "
          f"(best epoch {record.best_epoch} of {record.epochs}, "
          f"{record.wall_seconds:.1f} s, {record.samples_per_second:,.0f} samples/s "
          f"on {record.device_used})")
    print(f"checkpoint:    {_display(result.checkpoint)}")
    print(f"run log:       {_display(result.run_log)}")
    if summary_json:
        summary = runlog.summary(record, result.out_dir)
        atomic_write(summary_json, (json.dumps(summary, indent=2) + "\n").encode())
        print(f"summary:       {_display(Path(summary_json))}")


def _interrupted(e, group=None) -> str:
    """What a Ctrl-C during ``fit`` (``e``, a ``course_lib.train.Interrupted``) left behind, and
    the command that continues the run."""
    if not e.resumable:
        return ("interrupted before the first epoch ended: nothing to resume (the run log says "
                "so); run the same command again to start over")
    command = f"{_launcher(group)} -m course_lib train --resume {e.run_id}"
    if e.out_dir.resolve() != resolve_out_dir().resolve():  # where --resume looks by default
        command += f" --out-dir {shlex.quote(str(e.out_dir))}"
    return (f"interrupted after epoch {e.epochs_done}: the best checkpoint and the run log are "
            f"saved; continue with\n    {command}")


def _launcher(group) -> str:
    """How the run was started: python, or torchrun with as many processes."""
    if group is None:
        return "python"
    if group.local_world_size == group.world_size:
        return f"torchrun --standalone --nproc_per_node={group.world_size}"
    return f"torchrun --nnodes=... --nproc_per_node={group.local_world_size} --rdzv-endpoint=... (as before)"


# --------------------------------------------------------------------------------------------
# sweep
# --------------------------------------------------------------------------------------------

def _sweep(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.set_defaults(epochs=5)
    grid = ", ".join(f"{k}={','.join(map(str, v))}" for k, v in SWEEP_GRID.items())
    parser.add_argument("--grid", metavar="NAME=V1,V2", action="append", default=None,
                        help="a TrainConfig field and the values to try, one --grid per field; "
                             "the other options above are the settings every run shares "
                             f"(without --grid: {grid})")
    parser.add_argument("--fraction", action="store_true",
                        help="train a balanced fraction of the grid (8 runs for 4 to 7 "
                             "two-valued fields) instead of every combination")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(run=_run_sweep)


def _run_sweep(args) -> int:
    from .analysis import conclusions

    try:
        grid = parse_grid(args.grid) if args.grid else SWEEP_GRID
        points = sweep_points(grid, args.fraction)
        base = config_from_args(args)
        configs = [dataclasses.replace(base, **point) for point in points]  # each one validated
        out_dir = writable_dir(resolve_out_dir(base.out_dir), "the run log and checkpoints",
                               "--out-dir or the COURSE_RUNS_DIR environment variable")
        data = load_data(base.dataset, resolve_device(base.device), base.data_dir)
    except (ValueError, TypeError, FileNotFoundError, NotWritable, DataError, DatasetUnavailable) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2 if isinstance(e, (ValueError, TypeError)) else 1
    logged = len(read_run_log(out_dir)) if (out_dir / RUN_LOG).is_file() else 0
    print(f"sweep: {len(configs)} runs over {', '.join(grid)} on {data.name}, "
          f"{base.epochs} epochs each")
    for i, (point, config) in enumerate(zip(points, configs), 1):
        settings = " ".join(f"{k}={v}" for k, v in point.items())
        try:
            record = fit(config, data=data, progress=not args.quiet).record
            print(f"[{i}/{len(configs)}] {settings}: validation accuracy "
                  f"{record.final_val_acc:.2%}  ({record.run_id})", flush=True)
        except TrainingDiverged as e:
            print(f"[{i}/{len(configs)}] {settings}: diverged ({e})", flush=True)
        except KeyboardInterrupt:
            print(f"\ninterrupted after {i - 1} runs; they are in {_display(out_dir / RUN_LOG)}",
                  file=sys.stderr)
            return 130
    runs = read_run_log(out_dir).iloc[logged:]
    print("\n" + "\n".join(conclusions(runs)))
    print(f"\nrun log: {_display(out_dir / RUN_LOG)}\nreport:  python -m course_lib "
          f"report {_display(out_dir)} --html {_display(out_dir / 'report.html')}")
    return 0


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------


def _report(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs_dir", metavar="RUNS_DIR", help=f"the folder holding {RUN_LOG} (or the file)")
    parser.add_argument("--html", metavar="OUT.html", default=None,
                        help="write HiPlot's parallel plot of the runs (one line per run) as one "
                             "HTML file that opens offline in any browser")
    parser.add_argument("--epochs-html", metavar="OUT.html", default=None,
                        help="the same for every epoch of every run (its XY view: learning curves)")
    parser.add_argument("--figure", metavar="OUT.png", default=None,
                        help="the metric against each hyperparameter that varies, as a PNG")
    parser.add_argument("--metric", default="final_val_acc",
                        help="the result to compare runs by (a run-log column; losses: lower is better)")
    parser.set_defaults(run=_run_report)


def _run_report(args) -> int:
    from . import analysis

    try:
        runs = analysis.load_runs(args.runs_dir)
        for option, path in (("--html", args.html), ("--epochs-html", args.epochs_html),
                             ("--figure", args.figure)):
            if path:  # checked before any output, so a bad path leaves nothing half-done
                writable_dir(Path(path).parent, f"the {option} file", option)
    except (FileNotFoundError, ValueError, NotWritable) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.metric not in runs:
        print(f"error: --metric {args.metric!r} is not in the run log; choose one of "
              f"{', '.join(m for m in analysis.RUN_METRICS if m in runs)}", file=sys.stderr)
        return 2
    with pd.option_context("display.width", 200, "display.max_columns", None,
                           "display.float_format", "{:.4f}".format):
        print(analysis.run_view(runs).to_string(index=False))
    print("\n" + "\n".join(analysis.conclusions(runs, args.metric)))
    if args.html:
        path = analysis.write_html(analysis.runs_experiment(runs, color_by=args.metric), args.html)
        print(f"\nHiPlot, one line per run: {_display(path)}")
    if args.epochs_html:
        experiment = analysis.epochs_experiment(analysis.epochs_frame(runs))
        print(f"HiPlot, one point per epoch: {_display(analysis.write_html(experiment, args.epochs_html))}")
    if args.figure:
        buffer = io.BytesIO()
        analysis.plot_hyperparameters(runs, args.metric).savefig(buffer, format="png", dpi=120)
        atomic_write(args.figure, buffer.getvalue())
        print(f"figure: {_display(Path(args.figure))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
