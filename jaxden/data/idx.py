"""Reading and writing IDX files, the format of (Fashion-)MNIST, plain or gzip-compressed.

An IDX file is a 4-byte magic number (two zero bytes, a dtype code, the number of
dimensions), one big-endian uint32 per dimension, then the values in C order, big-endian.
Dtype codes: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64.
A file whose name ends in ``.gz`` is read and written through gzip.
"""

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from jaxden.data.errors import DataError

DTYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"),
          0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_CODES = {dtype.newbyteorder("="): code for code, dtype in DTYPES.items()}


def _open(path: Path, mode: str):
    return gzip.open(path, mode) if path.suffix == ".gz" else open(path, mode)


def _corrupt(path: Path, what: str) -> DataError:
    return DataError(f"IDX file {path} is corrupt or truncated ({what}): delete it and reinstall "
                     f"or re-download the dataset")


def read_idx(path: str | os.PathLike, max_items: int | None = None) -> np.ndarray:
    """The array stored in the IDX file ``path`` (gzip if its name ends in ``.gz``).

    The result has the file's shape and native byte order (uint8 stays uint8). With
    ``max_items``, only the first ``max_items`` entries along the first axis are read. Raises
    DataError naming the file when it is missing, truncated, has trailing bytes, or has a
    header that is not IDX.
    """
    path = Path(path)
    try:
        with _open(path, "rb") as f:
            magic = f.read(4)
            if len(magic) < 4 or magic[:2] != b"\0\0" or magic[2] not in DTYPES:
                raise _corrupt(path, f"magic number {magic.hex() or 'missing'} is not IDX: "
                                     f"expected 0000 then a dtype code in "
                                     f"{[hex(c) for c in DTYPES]} then the number of dimensions")
            dtype, ndim = DTYPES[magic[2]], magic[3]
            header = f.read(4 * ndim)
            if len(header) < 4 * ndim:
                raise _corrupt(path, f"header ends before its {ndim} dimensions")
            shape = struct.unpack(f">{ndim}I", header)
            if max_items is not None and ndim > 0:
                shape = (min(shape[0], max_items), *shape[1:])
            count = int(np.prod(shape, dtype=np.int64))
            body = f.read(count * dtype.itemsize)
            if len(body) < count * dtype.itemsize:
                raise _corrupt(path, f"{len(body)} data bytes where the header {shape} needs "
                                     f"{count * dtype.itemsize}")
            if max_items is None and f.read(1):
                raise _corrupt(path, f"trailing bytes after the {shape} values of the header")
    except FileNotFoundError:
        raise DataError(f"IDX file {path} does not exist: check the path") from None
    except (OSError, EOFError, zlib.error) as e:  # bad gzip stream, or unreadable
        raise _corrupt(path, f"{type(e).__name__}: {e}") from e
    return np.frombuffer(body, dtype).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write ``array`` (of a dtype listed in the module docstring) to the IDX file ``path``."""
    array = np.asarray(array)
    code = _CODES.get(array.dtype.newbyteorder("="))
    if code is None:
        raise DataError(f"IDX cannot store dtype {array.dtype}: use one of "
                        f"{sorted(str(d.newbyteorder('=')) for d in DTYPES.values())}")
    if array.ndim > 255:
        raise DataError(f"IDX stores at most 255 dimensions, got {array.ndim}")
    with _open(Path(path), "wb") as f:
        f.write(bytes([0, 0, code, array.ndim]))
        f.write(struct.pack(f">{array.ndim}I", *array.shape))
        f.write(np.ascontiguousarray(array, DTYPES[code]).tobytes())
