"""``course_lib.idx``: the IDX file format, read and written, and damaged files."""

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from course_lib.idx import DataError, read_idx, write_idx


def test_read_idx_follows_the_format(tmp_path):
    """Header bytes written by hand: 0, 0, type 0x08 (uint8), 2 dims, sizes 2 and 3 big-endian."""
    u8_bytes = bytes([0, 0, 0x08, 2]) + struct.pack(">II", 2, 3) + bytes([1, 2, 3, 250, 251, 252])
    i32_bytes = bytes([0, 0, 0x0C, 1]) + struct.pack(">I", 2) + struct.pack(">ii", -7, 70000)
    f64_bytes = bytes([0, 0, 0x0E, 1]) + struct.pack(">I", 2) + struct.pack(">dd", -0.5, 1e300)
    (tmp_path / "u8").write_bytes(u8_bytes)
    (tmp_path / "i32").write_bytes(i32_bytes)
    (tmp_path / "f64").write_bytes(f64_bytes)
    u8, i32, f64 = read_idx(tmp_path / "u8"), read_idx(tmp_path / "i32"), read_idx(tmp_path / "f64")
    assert u8.dtype == torch.uint8 and u8.tolist() == [[1, 2, 3], [250, 251, 252]]
    assert i32.dtype == torch.int32 and i32.tolist() == [-7, 70000]
    assert f64.dtype == torch.float64 and f64.tolist() == [-0.5, 1e300]


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_round_trip(tmp_path, suffix):
    values = np.arange(24, dtype=np.uint8).reshape(2, 3, 4) * 10
    path = tmp_path / f"values-idx3{suffix}"
    write_idx(path, torch.from_numpy(values))  # a tensor, as the datasets write them
    if suffix == ".gz":
        assert path.read_bytes()[:2] == b"\x1f\x8b"  # really gzipped
        header = gzip.decompress(path.read_bytes())[:16]
    else:
        header = path.read_bytes()[:16]
    assert header[:4] == bytes([0, 0, 0x08, 3])
    assert struct.unpack(">III", header[4:16]) == (2, 3, 4)
    back = read_idx(path)
    assert back.shape == (2, 3, 4) and back.dtype == torch.uint8
    np.testing.assert_array_equal(back.numpy(), values)


@pytest.mark.parametrize("dtype", [np.int32, np.float32, np.int64])
def test_write_idx_writes_only_bytes_and_says_how_to_convert(tmp_path, dtype):
    with pytest.raises(TypeError, match=f"dtype {np.dtype(dtype)}.*only uint8.*astype"):
        write_idx(tmp_path / "x", np.zeros(3, dtype))
    assert not (tmp_path / "x").exists()


def corrupt(path: Path, how: str) -> None:
    content = path.read_bytes()
    if how == "truncated":
        path.write_bytes(content[: len(content) - 100])
    elif how == "bad header":
        path.write_bytes(b"<html>" + content[6:])
    elif how == "truncated gzip":
        path.write_bytes(content[: len(content) // 2])
    elif how == "not gzip":
        path.write_bytes(b"this is not gzip data at all")
    elif how == "empty":
        path.write_bytes(b"")


@pytest.mark.parametrize("suffix,how", [
    ("", "truncated"), ("", "bad header"), ("", "empty"), (".gz", "truncated gzip"), (".gz", "not gzip"),
])
def test_damaged_idx_file_names_the_file_and_the_fix(tmp_path, suffix, how):
    path = tmp_path / f"train-images-idx3-ubyte{suffix}"
    write_idx(path, np.zeros((10, 28, 28), np.uint8))
    corrupt(path, how)
    with pytest.raises(DataError) as err:
        read_idx(path)
    message = str(err.value)
    assert str(path) in message
    assert "delete it" in message and "downloaded again" in message


def test_a_damaged_file_can_name_another_fix(tmp_path):
    path = tmp_path / "t10k-labels-idx1-ubyte"
    path.write_bytes(b"\0\0\x08\x01\0\0\0\x05abc")  # header asks for 5 values, 3 follow
    with pytest.raises(DataError, match="holds 11 bytes but its header \\(5,\\) asks for 13.*: reinstall it"):
        read_idx(path, fix="reinstall it")
