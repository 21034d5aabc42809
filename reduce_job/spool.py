"""A shard's partial on local disk, read back a slice at a time.

The reduce's memory must not follow the size of a partial (its pairs grow with the shard's
input, its content vectors with the places it touched). So each object is streamed to a
scratch file while its sha256 is computed (nothing is parsed before the checksum matches), and
each .npy is then read with pread a slice of rows at a time: checking and staging a partial of
any size costs a few chunks of memory. Disk holds at most `ahead` + 1 shards (collect.py).
"""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
from botocore.exceptions import ClientError

from witple_batch.partials import PartialError

DOWNLOAD_CHUNK = 1 << 20


def download(client: Any, bucket: str, key: str, path: Path, sha256: str, where: str) -> None:
    """The object at `path`, its checksum verified while it streams; PartialError when it is
    missing or differs from the marker's sha256."""
    digest = hashlib.sha256()
    try:
        body = client.get_object(Bucket=bucket, Key=key)["Body"]
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            raise PartialError(f"{where}: {path.name} is missing") from None
        raise
    with body, path.open("wb") as out:
        for chunk in body.iter_chunks(DOWNLOAD_CHUNK):
            digest.update(chunk)
            out.write(chunk)
    if digest.hexdigest() != sha256:
        raise PartialError(f"{where}: checksum mismatch for {path.name}")


class NpyFile:
    """A .npy file read by rows (`array[a:b]`), never loaded whole; object arrays are refused."""

    def __init__(self, path: Path, where: str) -> None:
        name = path.name
        with path.open("rb") as f:
            try:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
                elif version == (2, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
                else:
                    raise ValueError(f"unsupported .npy version {version}")
            except ValueError as exc:
                raise PartialError(f"{where}: {name} is not a valid .npy file: {exc}") from None
            offset = f.tell()
        if dtype.hasobject:
            raise PartialError(f"{where}: {name} cannot be loaded without pickle: it holds Python objects")
        if fortran and len(shape) > 1:
            raise PartialError(f"{where}: {name} is in Fortran order; partials are written in C order")
        if not shape:
            raise PartialError(f"{where}: {name} holds a scalar, not an array")
        self.shape: tuple[int, ...] = tuple(shape)
        self.dtype: np.dtype = dtype
        self._row_bytes = dtype.itemsize * math.prod(self.shape[1:])
        self._offset = offset
        if path.stat().st_size != offset + self._row_bytes * self.shape[0]:
            raise PartialError(f"{where}: {name} is not a valid .npy file: its size does not match its header")
        self._name = name
        self._fd = os.open(path, os.O_RDONLY)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows: slice) -> np.ndarray:
        start, stop, step = rows.indices(len(self))
        if step != 1:
            raise IndexError("NpyFile reads contiguous rows only")
        count = max(stop - start, 0)
        size, offset = count * self._row_bytes, self._offset + start * self._row_bytes
        data = bytearray(size)
        done = 0
        while done < size:  # pread may return less than asked (over 2 GiB at once on Linux)
            got = os.preadv(self._fd, [memoryview(data)[done:]], offset + done)
            if got == 0:
                raise OSError(f"{self._name}: file ended {size - done} bytes early")
            done += got
        return np.frombuffer(data, self.dtype).reshape((count, *self.shape[1:]))

    def close(self) -> None:
        os.close(self._fd)
