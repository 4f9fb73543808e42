"""``course_lib.distributed`` and ``torchrun ... -m course_lib train``: 2 processes on the CPU (gloo).

The processes are real: ``torchrun`` for the command line, ``multiprocessing`` (spawn) for the
pieces. Data: mnist-5k's digits written as IDX files, which every process reads in a blink.
"""

import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import time
import traceback
from pathlib import Path

import pytest
import torch

from course_lib import distributed
from course_lib.config import TrainConfig
from course_lib.datasets import load_data, load_raw, write_raw
from course_lib.distributed import parallel_hooks
from course_lib.models import NeuralNet
from course_lib.runlog import read_run_log
from course_lib.train import TrainingDiverged, fit

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
FAST = ("--dataset", "mnist", "--epochs", "30", "--max-batches", "2", "--num-units", "32",
        "--batch-size", "64", "--device", "cpu", "--quiet")  # 30 epochs: time to press Ctrl-C


def _env(**extra) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
           distributed.TIMEOUT_ENV: "20", **extra}
    env.pop("RANK", None)
    return env


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_raw(load_raw("mnist-5k"), root / "MNIST" / "raw")
    return root


@pytest.fixture(scope="module")
def one_process(data_dir, tmp_path_factory):
    """The run of ``FAST`` on one process, in this one."""
    config = TrainConfig(dataset="mnist", epochs=30, max_batches=2, num_units=32, batch_size=64,
                         device="cpu", data_dir=str(data_dir),
                         out_dir=str(tmp_path_factory.mktemp("one")))
    return fit(config, progress=False)


def _torchrun(tmp_path, data_dir, *options, **popen):
    command = [*TORCHRUN, "-m", "course_lib", "train", *FAST, "--data-dir", str(data_dir),
               "--out-dir", str(tmp_path / "runs"), *options]
    return subprocess.Popen(command, cwd=tmp_path, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **popen)


def _last_params(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def _assert_same_params(got: dict, expected: dict) -> None:
    assert got.keys() == expected.keys()  # no "module." prefix
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------------------------
# Pieces that need no second process
# --------------------------------------------------------------------------------------------


def _torchrun_environ(world=2, local_world=2, rank=0):
    return {"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank % local_world),
            "LOCAL_WORLD_SIZE": str(local_world), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}


@pytest.mark.parametrize("device, backend, gpus, expected", [
    ("cpu", "nccl", 0, "--backend nccl runs on CUDA GPUs only"),
    ("cuda", "auto", 0, "this machine has no CUDA GPU"),
    ("cuda", "auto", 1, "--nproc_per_node=1 or less"),
    ("cuda:1", "auto", 2, "--device cuda:1 names one GPU"),
    ("mps", "auto", 0, "use --device cpu or cuda"),
    ("cpu", "mpi", 0, "--backend must be one of auto, gloo, nccl"),
])
def test_bad_combinations_are_clear_errors_before_anything_starts(monkeypatch, device, backend,
                                                                  gpus, expected):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
    with pytest.raises(ValueError) as error:
        distributed.plan(device, backend, _torchrun_environ())
    assert expected in str(error.value)


def test_each_process_gets_its_own_gpu_and_the_cpu_gets_gloo(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.distributed, "is_nccl_available", lambda: True)
    second = distributed.plan("auto", "auto", _torchrun_environ(rank=1))
    assert (second.device, second.backend, second.rank) == (torch.device("cuda:1"), "nccl", 1)
    on_cpu = distributed.plan("cpu", "auto", _torchrun_environ(world=4, local_world=2, rank=3))
    assert (on_cpu.device, on_cpu.backend, on_cpu.local_rank) == (torch.device("cpu"), "gloo", 1)


@pytest.mark.parametrize("value", ["0", "-1", "soon", "inf"])
def test_a_bad_timeout_names_the_variable(value):
    with pytest.raises(ValueError, match=distributed.TIMEOUT_ENV):
        distributed.timeout_s({distributed.TIMEOUT_ENV: value})


def test_the_global_batch_must_split_evenly():
    group = distributed.Group(0, 4, 0, 4, "gloo", torch.device("cpu"), 30.0)
    with pytest.raises(ValueError, match="--batch-size 126 is the global batch.*try --batch-size 124 or 128"):
        distributed.check_batch_size(126, group)
    with pytest.raises(ValueError, match="last batch of each epoch holds 2 sample"):
        distributed.check_last_batch(128, 128 * 3 + 2, 4, group)
    distributed.check_last_batch(128, 128 * 3 + 2, 3, group)  # max_batches skips that batch


@pytest.mark.parametrize("n, world", [(0, 2), (1, 2), (7, 3), (128, 2), (130, 4)])
def test_the_shares_cover_each_sample_once_in_order(n, world):
    parts = [distributed.share(n, distributed.Group(r, world, r, world, "gloo", torch.device("cpu"), 1.0))
             for r in range(world)]
    assert [i for p in parts for i in range(n)[p]] == list(range(n))
    assert max(p.stop - p.start for p in parts) - min(p.stop - p.start for p in parts) <= 1


def test_without_torchrun_there_is_no_group_and_no_backend_option(monkeypatch):
    for name in distributed.TORCHRUN_ENV:
        monkeypatch.delenv(name, raising=False)
    assert distributed.start("cpu", "auto") is None and distributed.current() is None
    with pytest.raises(ValueError, match="--backend gloo applies to runs on several processes"):
        distributed.start("cpu", "gloo")


# --------------------------------------------------------------------------------------------
# The command line under torchrun
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_two_processes_train_like_one_and_write_once(tmp_path, data_dir, one_process):
    run = _torchrun(tmp_path, data_dir, "--summary-json", "s.json")
    out, err = run.communicate(timeout=300)
    assert run.returncode == 0, err
    assert out.count("test accuracy:") == 1 and "error" not in err  # rank 1 printed nothing
    (record,) = read_run_log(tmp_path / "runs").to_dict("records")  # one line, by rank 0
    assert (record["world_size"], record["backend"], record["devices"]) == (2, "gloo", ["cpu", "cpu"])
    run_dir = tmp_path / "runs" / record["run_id"]
    assert sorted(p.name for p in run_dir.iterdir()) == ["best.pt", "last.pt"]
    assert json.loads((tmp_path / "s.json").read_text())["run_id"] == record["run_id"]
    # the same parameters as one process on the whole batch, and a plain NeuralNet loads them
    _assert_same_params(_last_params(run_dir / "last.pt"), _last_params(one_process.out_dir /
                        one_process.run_id / "last.pt"))
    NeuralNet(32).load_state_dict(torch.load(run_dir / "best.pt", weights_only=True))
    # evaluation counted every sample once: the same accuracies as one process
    for key in ("final_val_acc", "test_acc", "final_train_acc"):
        assert record[key] == pytest.approx(getattr(one_process.record, key), abs=1e-9), key


@pytest.mark.slow
def test_ctrl_c_keeps_the_files_and_resume_finishes_the_run(tmp_path, data_dir, one_process):
    run = _torchrun(tmp_path, data_dir, start_new_session=True)  # its own process group, like a shell's
    deadline = time.monotonic() + 240
    while not list((tmp_path / "runs").glob("*/last.pt")) and run.poll() is None:
        assert time.monotonic() < deadline, "the first epoch never ended"
        time.sleep(0.02)
    os.killpg(run.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    _, err = run.communicate(timeout=120)
    (record,) = read_run_log(tmp_path / "runs").to_dict("records")
    assert record["status"] == "interrupted" and 1 <= record["epochs_completed"] < 30
    command = f"torchrun --standalone --nproc_per_node=2 -m course_lib train --resume {record['run_id']}"
    assert command in err and err.count("interrupted after epoch") == 1
    resumed = _torchrun(tmp_path, data_dir, "--resume", record["run_id"])
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    final = read_run_log(tmp_path / "runs").iloc[-1]
    assert final["status"] == "completed" and final["resumed_at_epoch"] == record["epochs_completed"]
    _assert_same_params(_last_params(tmp_path / "runs" / record["run_id"] / "last.pt"),
                        _last_params(one_process.out_dir / one_process.run_id / "last.pt"))


@pytest.mark.slow
def test_an_indivisible_batch_is_one_clear_error(tmp_path, data_dir):
    run = _torchrun(tmp_path, data_dir, "--batch-size", "63")
    _, err = run.communicate(timeout=300)
    assert run.returncode != 0, err
    assert err.count("error: --batch-size 63 is the global batch") == 1, err  # said by rank 0 only
    assert not (tmp_path / "runs" / "runs.jsonl").exists()


# --------------------------------------------------------------------------------------------
# Faults, with processes started here: a NaN on one rank, a rank that stops answering
# --------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _in_processes(target, tmp_path, timeout_s, *args, wait_for_rank_1=True) -> list:
    """Run ``target(rank, tmp_path, *args)`` in 2 processes joined as torchrun would; return what
    each wrote to ``rank<r>.json`` (None for a rank that wrote nothing).

    The port is found free, then released for rank 0 to take: another program can take it in
    between, so a run that could not bind it is tried again on another port (torchrun's own
    tests above need none of this: ``--standalone`` lets torchrun pick the port)."""
    for _ in range(5):
        ranks = _in_processes_on(str(_free_port()), target, tmp_path, timeout_s, *args,
                                 wait_for_rank_1=wait_for_rank_1)
        if not any(r and "EADDRINUSE" in r.get("message", "") + r.get("trace", "") or
                   r and "address already in use" in r.get("message", "").lower() for r in ranks):
            return ranks
        for r in range(2):
            (tmp_path / f"rank{r}.json").unlink(missing_ok=True)
    raise AssertionError("no free port for the process group after 5 tries")


def _in_processes_on(port, target, tmp_path, timeout_s, *args, wait_for_rank_1=True) -> list:
    spawn = multiprocessing.get_context("spawn")
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "WORLD_SIZE": "2",
           "LOCAL_WORLD_SIZE": "2", distributed.TIMEOUT_ENV: timeout_s, "OMP_NUM_THREADS": "1"}
    workers = [spawn.Process(target=_worker, args=(target, rank, env, tmp_path, *args))
               for rank in range(2)]
    for w in workers:
        w.start()
    workers[0].join(timeout=180)
    workers[1].join(timeout=180 if wait_for_rank_1 else 0)
    for w in workers:
        if w.is_alive():
            w.kill()  # e.g. the rank that hangs on purpose
    files = [tmp_path / f"rank{r}.json" for r in range(2)]
    return [json.loads(f.read_text()) if f.exists() else None for f in files]


def _worker(target, rank, env, tmp_path, *args):
    os.environ.update(env, RANK=str(rank), LOCAL_RANK=str(rank))
    try:
        result = target(rank, tmp_path, *args)
    except BaseException as e:
        result = {"error": type(e).__name__, "message": str(e), "trace": traceback.format_exc()}
    (tmp_path / f"rank{rank}.json").write_text(json.dumps(result))
    distributed.stop()


def _train_with_nan_on_rank_1(rank, tmp_path, data_path):
    group = distributed.start("cpu", "auto")
    data = torch.load(data_path, weights_only=False)
    if rank == 1:
        data.train.images[:] = float("nan")
    config = TrainConfig(dataset="mnist", epochs=2, max_batches=3, num_units=16, device="cpu",
                         out_dir=str(tmp_path / "runs"))
    fit(config, data=data, progress=False, hooks=parallel_hooks(group))
    return {}


@pytest.mark.slow
def test_a_nan_on_one_rank_stops_every_rank(tmp_path, data_dir):
    torch.save(load_data("mnist", "cpu", data_dir), tmp_path / "data.pt")
    ranks = _in_processes(_train_with_nan_on_rank_1, tmp_path, "20", tmp_path / "data.pt")
    for rank in ranks:
        assert rank.get("error") == TrainingDiverged.__name__, rank
        assert "training stopped in epoch 1: the training loss became nan" in rank["message"]
    (record,) = read_run_log(tmp_path / "runs").to_dict("records")
    assert record["status"] == "diverged" and record["world_size"] == 2


def _rank_1_stops_answering(rank, tmp_path):
    distributed.start("cpu", "auto")
    if rank == 1:
        time.sleep(60)  # hung: alive, but never joins the sum below
        return {}
    distributed.sum_over_ranks([1.0], distributed.current())
    return {}


@pytest.mark.slow
def test_a_rank_that_stops_answering_is_named_instead_of_a_hang(tmp_path):
    rank0, _ = _in_processes(_rank_1_stops_answering, tmp_path, "2", wait_for_rank_1=False)
    assert rank0["error"] == "ProcessLost", rank0
    assert rank0["message"].startswith("rank 0: lost contact with the other processes")
    assert "Rank(s) 1 stopped answering" in rank0["message"]
    assert f"at most 2 s ({distributed.TIMEOUT_ENV})" in rank0["message"]


def _uneven_last_batch(rank, tmp_path):
    """One step of DDP (``DataParallel``) on each global batch of 4 then 3 samples: the last
    one splits 1 / 2 between the ranks. Return this rank's gradients after the last step."""
    from types import SimpleNamespace

    group = distributed.start("cpu", "auto")
    torch.manual_seed(0)
    images, labels = torch.randn(7, 5), torch.randint(0, 3, (7,))
    model = torch.nn.Linear(5, 3)
    batches = lambda split, config, generator, steps: [(images[:4], labels[:4]), (images[4:], labels[4:])]
    parallel = distributed.DataParallel(group, batches, None)
    shares = []
    for part_images, part_labels in parallel.batches(range(7), SimpleNamespace(batch_size=4), None, 2):
        ddp = parallel.wrap(model)
        model.zero_grad()
        torch.nn.functional.cross_entropy(ddp(part_images), part_labels).backward()
        shares.append(len(part_labels))
    return {"shares": shares, "grads": [p.grad.tolist() for p in model.parameters()]}


@pytest.mark.slow
def test_an_uneven_last_batch_gives_the_whole_batchs_gradient(tmp_path):
    """The reason for the weighted comm hook: 3 samples shared 1 / 2 must give the gradient of
    the mean loss over the 3, which DDP's plain average over the ranks does not."""
    ranks = _in_processes(_uneven_last_batch, tmp_path, "20")
    assert [r.get("shares") for r in ranks] == [[2, 1], [2, 2]], ranks
    torch.manual_seed(0)
    images, labels = torch.randn(7, 5), torch.randint(0, 3, (7,))
    model = torch.nn.Linear(5, 3)

    def grads(rows):
        model.zero_grad()
        torch.nn.functional.cross_entropy(model(images[rows]), labels[rows]).backward()
        return [p.grad.clone() for p in model.parameters()]

    whole, first, second = grads(slice(4, 7)), grads(slice(4, 5)), grads(slice(5, 7))
    plain_average = [(a + b) / 2 for a, b in zip(first, second)]
    for rank in ranks:
        got = [torch.tensor(g) for g in rank["grads"]]
        for mine, expected, wrong in zip(got, whole, plain_average):
            torch.testing.assert_close(mine, expected, rtol=1e-5, atol=1e-6)
            assert (expected - wrong).abs().max() > 1e-3  # the check can tell the two apart


def test_an_error_that_is_not_about_communication_passes_through_unchanged():
    def shapes_differ(*args):
        raise RuntimeError("The size of tensor a (3) must match the size of tensor b (4)")

    with pytest.raises(RuntimeError) as raised:
        distributed._collective(shapes_differ)
    assert type(raised.value) is RuntimeError and "size of tensor a (3)" in str(raised.value)

    def peer_gone(*args):
        raise RuntimeError("[gloo] Connection closed by peer [127.0.0.1]:1234")

    with pytest.raises(distributed.ProcessLost, match="lost contact with the other processes"):
        distributed._collective(peer_gone)


# --------------------------------------------------------------------------------------------
# The lesson's checks (course_lib.checks.distributed)
# --------------------------------------------------------------------------------------------


def _combine(grads, sizes, reduction):
    total = sum(sizes)
    return sum(grads) if reduction == "sum" else sum(n / total * g for g, n in zip(grads, sizes))


@pytest.mark.parametrize("answer, passed, hint", [
    (_combine, 6, ""),
    (lambda grads, sizes, reduction: sum(grads) / len(grads), 1, "plain average"),  # DDP's default
    (lambda grads, sizes, reduction: sum(grads), 3, "plain sum"),  # right for a sum loss only
    (lambda grads, sizes, reduction: grads[0], 0, "not the whole batch's gradient"),
    (lambda grads, sizes, reduction: grads[0].T, 0, "expected a tensor of shape (5, 3)"),
])
def test_check_combine_gradients_passes_the_answer_and_names_the_mistakes(answer, passed, hint):
    from course_lib.checks import check_combine_gradients

    report = check_combine_gradients(answer)
    assert sum(line.passed for line in report.lines) == passed and len(report.lines) == 6
    assert all(hint in line.detail for line in report.lines if not line.passed)


@pytest.mark.parametrize("answer, failing, hint", [
    (lambda n, world, rank: (n * rank // world, n * (rank + 1) // world), [], ""),
    (lambda n, world, rank: (min(n, rank * -(-n // world)), min(n, (rank + 1) * -(-n // world))),
     ["n=10, world_size=4"], "differ by at most one"),
    (lambda n, world, rank: (rank * (n // world), (rank + 1) * (n // world)),
     ["n=10, world_size=4", "n=3, world_size=4", "n=128, world_size=3"], "exactly once"),
])
def test_check_shard_bounds_passes_the_answer_and_names_the_mistakes(answer, failing, hint):
    from course_lib.checks import check_shard_bounds

    report = check_shard_bounds(answer)
    assert report.failed_names() == failing
    assert all(hint in line.detail for line in report.lines if not line.passed)
