"""The IDX file format MNIST is distributed in: read (raw or gzipped) and write.

Layout: two zero bytes, a type code, the number of dimensions ``d``, then ``d`` big-endian uint32
sizes, then the values in big-endian row-major order. A damaged file raises ``DataError`` naming
the file and what to do.
"""

import gzip
import zlib
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}  # read
UINT8 = 0x08  # the only type write_idx writes: MNIST's images and labels are bytes


class DataError(RuntimeError):
    """A data file is damaged, incomplete or not what it should be."""

    @classmethod
    def damaged(cls, path, problem: str, fix: str | None = None) -> "DataError":
        """The error for a damaged ``path``: what is wrong with it and how to fix it (by default:
        delete it, it will be downloaded again)."""
        fix = fix or "delete it and run again; it will be downloaded again"
        return cls(f"{path}: {problem}. The file is damaged or incomplete: {fix}")


def read_idx(path, fix: str | None = None) -> Tensor:
    """Read an IDX file (``.gz`` or raw) into a tensor; a damaged file raises ``DataError``
    (whose message ends with ``fix``, or says to delete the file)."""
    path = Path(path)
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as f:
            data = f.read()
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise DataError.damaged(path, f"it is not a complete gzip file ({e})", fix) from None
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] not in IDX_TYPES or data[3] == 0:
        raise DataError.damaged(path, f"it does not start with an IDX header (first bytes {data[:4]!r})", fix)
    ndim, dtype = data[3], np.dtype(IDX_TYPES[data[2]])
    header = 4 + 4 * ndim
    shape = tuple(int(s) for s in np.frombuffer(data[4:header], dtype=">u4")) if len(data) >= header else ()
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(shape) != ndim or len(data) != expected:
        raise DataError.damaged(path, f"it holds {len(data)} bytes but its header {shape} asks for {expected}", fix)
    values = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return torch.from_numpy(values.astype(dtype.newbyteorder("="), copy=True))


def write_idx(path, values) -> None:
    """Write uint8 ``values`` (a tensor or array) as an IDX file, gzipped when ``path`` ends in
    ``.gz``."""
    array = np.asarray(values)
    if array.dtype != np.uint8:
        raise TypeError(f"write_idx: values have dtype {array.dtype}; only uint8 is written (MNIST's "
                        "images and labels are bytes): convert with .astype(np.uint8) or .to(torch.uint8)")
    header = bytes([0, 0, UINT8, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    path = Path(path)
    with (gzip.open(path, "wb") if path.suffix == ".gz" else open(path, "wb")) as f:
        f.write(header + array.tobytes())
