"""PostgreSQL's binary COPY format, built from numpy columns in one pass (no Python per row).

Each row is a 16-bit field count, then per field a 32-bit length and the value in network
byte order; every column here is fixed-width, so a row is one packed numpy record and a chunk
of rows is one `tobytes()`. pgvector's binary vector is dim (int16), unused (int16), floats.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

HEADER = b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big")
TRAILER = (-1).to_bytes(2, "big", signed=True)
CHUNK_ROWS = 65_536


@dataclass(frozen=True)
class Column:
    kind: str  # bool | int4 | int8 | float8 | vector | bytea (fixed width)
    values: np.ndarray  # (n,) or (n, width) for vector and bytea

    def dtype(self) -> list[tuple[str, str | tuple[str, int]]]:
        if self.kind == "bool":
            return [("value", "u1")]
        if self.kind == "int4":
            return [("value", ">i4")]
        if self.kind == "int8":
            return [("value", ">i8")]
        if self.kind == "float8":
            return [("value", ">f8")]
        if self.kind == "vector":
            return [("dim", ">i2"), ("unused", ">i2"), ("value", (">f4", self.values.shape[1]))]
        if self.kind == "bytea":
            return [("value", ("u1", self.values.shape[1]))]
        raise ValueError(f"unsupported binary COPY column kind {self.kind!r}")

    def width(self) -> int:
        return int(np.dtype(self.dtype()).itemsize)


def rows(columns: Sequence[Column]) -> Iterator[bytes]:
    """The COPY body (header, rows in chunks, trailer) for columns of equal length."""
    n = len(columns[0].values)
    fields: list[tuple[str, np.dtype]] = [("count", np.dtype(">i2"))]
    for i, column in enumerate(columns):
        fields += [(f"len{i}", np.dtype(">i4")), (f"col{i}", np.dtype(column.dtype()))]
    record = np.dtype(fields)  # packed: numpy adds no padding without align=True
    yield HEADER
    for start in range(0, n, CHUNK_ROWS):
        stop = min(start + CHUNK_ROWS, n)
        out = np.empty(stop - start, dtype=record)
        out["count"] = len(columns)
        for i, column in enumerate(columns):
            out[f"len{i}"] = column.width()
            target = out[f"col{i}"]
            if column.kind == "vector":
                target["dim"] = column.values.shape[1]
                target["unused"] = 0
            target["value"] = column.values[start:stop]
        yield out.tobytes()
    yield TRAILER
