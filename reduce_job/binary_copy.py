"""PostgreSQL's binary value formats, to and from numpy in one pass (no Python per row).

Into the database by binary COPY: each row is a 16-bit field count, then per field a 32-bit
length and the value in network byte order; every column here is fixed-width, so a row is one
packed numpy record and a chunk of rows is one `tobytes()`. Out of it, `read` takes each
column's values in the same binary forms, packed into one bytea. pgvector's binary vector is
dim (int16), unused (int16), floats.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import psycopg

from witple_batch.partials import Sliceable

HEADER = b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big")
TRAILER = (-1).to_bytes(2, "big", signed=True)
CHUNK_BYTES = 8 << 20  # one chunk of COPY rows, whatever their width


@dataclass(frozen=True)
class Column:
    kind: str  # bool | int4 | int8 | float8 | vector | bytea (fixed width)
    values: Sliceable  # (n,) or (n, width) for vector and bytea, read a chunk of rows at a time

    def dtype(self) -> list[tuple[str, str | tuple[str, int]]]:
        return field_dtype(self.kind, self.values.shape[1] if len(self.values.shape) > 1 else 0)

    def width(self) -> int:
        return int(np.dtype(self.dtype()).itemsize)


def field_dtype(kind: str, width: int = 0) -> list[tuple[str, str | tuple[str, int]]]:
    """One field's value as a numpy record; `width` is a vector's dimension or a bytea's length."""
    if kind == "bool":
        return [("value", "u1")]
    if kind == "int4":
        return [("value", ">i4")]
    if kind == "int8":
        return [("value", ">i8")]
    if kind == "float8":
        return [("value", ">f8")]
    if kind == "vector":
        return [("dim", ">i2"), ("unused", ">i2"), ("value", (">f4", width))]
    if kind == "bytea":
        return [("value", ("u1", width))]
    raise ValueError(f"unsupported binary COPY column kind {kind!r}")


def copy_in(cur: psycopg.Cursor, table: str, columns: Sequence[Column]) -> None:
    """The columns into `table` by one binary COPY, a chunk of rows at a time."""
    with cur.copy(f"COPY {table} FROM STDIN (FORMAT BINARY)") as copy:  # type: ignore[arg-type]
        for chunk in rows(columns):
            copy.write(chunk)


def rows(columns: Sequence[Column]) -> Iterator[bytes]:
    """The COPY body (header, rows in chunks, trailer) for columns of equal length."""
    n = len(columns[0].values)
    fields: list[tuple[str, np.dtype]] = [("count", np.dtype(">i2"))]
    for i, column in enumerate(columns):
        fields += [(f"len{i}", np.dtype(">i4")), (f"col{i}", np.dtype(column.dtype()))]
    record = np.dtype(fields)  # packed: numpy adds no padding without align=True
    yield HEADER
    step = max(1, CHUNK_BYTES // record.itemsize)
    for start in range(0, n, step):
        stop = min(start + step, n)
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


class Repeat:
    """`value` n times, made a chunk at a time (a shard number on every staged row)."""

    def __init__(self, value: int, n: int, dtype: str = "int32") -> None:
        self.value, self.shape, self.dtype = value, (n,), np.dtype(dtype)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows: slice) -> np.ndarray:
        start, stop, _ = rows.indices(len(self))
        return np.full(max(stop - start, 0), self.value, self.dtype)


class RowNumber(Repeat):
    """0, 1, ... n-1, a chunk at a time (each staged row's index in its shard's list)."""

    def __init__(self, n: int) -> None:
        super().__init__(0, n)

    def __getitem__(self, rows: slice) -> np.ndarray:
        start, stop, _ = rows.indices(len(self))
        return np.arange(start, stop, dtype=self.dtype)


class ColumnOf:
    """Column `j` of a 2-d array read by rows."""

    def __init__(self, array: Sliceable, j: int) -> None:
        self.array, self.j = array, j
        self.shape, self.dtype = (len(array),), array.dtype

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows: slice) -> np.ndarray:
        return self.array[rows][:, self.j]


SEND = {"int4": "int4send", "float8": "float8send", "vector": "vector_send", "bytea": "byteasend"}


def read(
    conn: psycopg.Connection, query: str, params: dict[str, Any], fields: Sequence[tuple[str, str, int]]
) -> dict[str, np.ndarray]:
    """A query's columns (name, kind, width) as numpy arrays, in one row of packed binary.

    COPY TO sends one message per row (10 us of Python each through psycopg); instead each
    column comes back as one bytea of its values' binary forms (the same as COPY's), aggregated
    in row order by the server. Every value must be non-NULL (coalesce in the query). Holds the
    whole result: callers bound it by what they select.
    """
    names = [f"c{i}" for i in range(len(fields))]
    aggregates = ", ".join(
        f"coalesce(string_agg({SEND[kind]}({name}), ''), '')" for name, (_, kind, _) in zip(names, fields, strict=True)
    )
    sql = f"SELECT {aggregates} FROM ({query}) AS q ({', '.join(names)})"
    row = conn.execute(sql, params, binary=True).fetchone()  # type: ignore[arg-type]
    out = {}
    for (name, kind, width), packed in zip(fields, row or (), strict=True):
        values = np.frombuffer(packed, dtype=np.dtype(field_dtype(kind, width)))["value"]
        out[name] = values.astype(values.dtype.newbyteorder("="))
    return out
