"""Moving each shard's partial into session-temporary staging tables, one shard at a time.

Rows are staged as the shards wrote them (pairs refer to their shard's user and place lists by
index); summing across shards is the database's job (upsert.BATCH_TABLES), so the reduce holds
one chunk of one shard's arrays at a time, whatever the batch's distinct users, places and shard
count. Pairs and content vectors go as binary COPY built with numpy; ids as text COPY.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from reduce_job.binary_copy import Column, ColumnOf, Repeat, RowNumber, copy_in
from witple_batch.partials import Sliceable, iter_strings
from witple_batch.run_state import FileStatus

STAGING_DDL = f"""
CREATE TEMP TABLE stage_user_keys (shard int NOT NULL, idx int NOT NULL, user_id text NOT NULL);
CREATE TEMP TABLE stage_place_keys (
    shard int NOT NULL, idx int NOT NULL, place_category text NOT NULL, place_id text NOT NULL
);
CREATE TEMP TABLE stage_place_content (
    shard int NOT NULL, idx int NOT NULL, content vector(384) NOT NULL, text_sha256 bytea NOT NULL,
    catalogue_sha256 bytea NOT NULL
);
CREATE TEMP TABLE stage_pairs (
    shard int NOT NULL, user_idx int NOT NULL, place_idx int NOT NULL,
    clicks bigint NOT NULL, likes bigint NOT NULL, bookmarks bigint NOT NULL, other bigint NOT NULL,
    first_us bigint NOT NULL, last_us bigint NOT NULL
);
CREATE TEMP TABLE stage_files (
    key text, etag text, size bigint, status text CHECK (status IN ({", ".join(f"'{s.value}'" for s in FileStatus)})),
    reason text, records bigint, accepted bigint, rejected bigint, rejects_by_reason jsonb, envelope_batch_id text
);
"""
_TEXT_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def create(conn: psycopg.Connection) -> None:
    conn.execute(STAGING_DDL)  # type: ignore[arg-type]


def _copy_text(cur: psycopg.Cursor, table: str, lines: Iterable[str]) -> None:
    with cur.copy(f"COPY {table} FROM STDIN") as copy:  # type: ignore[arg-type]
        batch: list[str] = []
        for line in lines:
            batch.append(line)
            if len(batch) >= 65_536:
                copy.write("".join(batch))
                batch.clear()
        copy.write("".join(batch))


def stage_partial(conn: psycopg.Connection, shard: int, arrays: Mapping[str, Sliceable], where: str) -> None:
    """One checked partial into staging, read a chunk at a time (arrays in memory or on disk)."""

    def ids(name: str) -> Iterator[str]:
        return iter_strings(arrays[f"{name}_offsets"], arrays[f"{name}_utf8"], where)

    with conn.cursor() as cur:
        _copy_text(
            cur,
            "stage_user_keys",
            (f"{shard}\t{i}\t{user.translate(_TEXT_ESCAPES)}\n" for i, user in enumerate(ids("users.id"))),
        )
        _copy_text(
            cur,
            "stage_place_keys",
            (
                f"{shard}\t{i}\t{category.translate(_TEXT_ESCAPES)}\t{place.translate(_TEXT_ESCAPES)}\n"
                for i, (category, place) in enumerate(zip(ids("places.category"), ids("places.id"), strict=True))
            ),
        )
        n_places = len(arrays["places.catalogue_sha256"])
        copy_in(
            cur,
            "stage_place_content",
            [
                Column("int4", Repeat(shard, n_places)),
                Column("int4", RowNumber(n_places)),
                Column("vector", arrays["places.content"]),
                Column("bytea", arrays["places.text_sha256"]),
                Column("bytea", arrays["places.catalogue_sha256"]),
            ],
        )
        n_pairs = len(arrays["pairs.user"])
        counts = arrays["pairs.counts"]
        copy_in(
            cur,
            "stage_pairs",
            [
                Column("int4", Repeat(shard, n_pairs)),
                Column("int4", arrays["pairs.user"]),
                Column("int4", arrays["pairs.place"]),
                *(Column("int8", ColumnOf(counts, column)) for column in range(counts.shape[1])),
                Column("int8", arrays["pairs.first_us"]),
                Column("int8", arrays["pairs.last_us"]),
            ],
        )


def stage_files(conn: psycopg.Connection, files: list[dict[str, Any]]) -> None:
    """A shard's files.json rows as they are (a field the table lacks is ignored, a missing one is NULL)."""
    conn.execute(
        "INSERT INTO stage_files SELECT * FROM jsonb_populate_recordset(NULL::stage_files, %s)", (Jsonb(files),)
    )


def analyze(conn: psycopg.Connection) -> None:
    conn.execute("ANALYZE stage_user_keys; ANALYZE stage_place_keys; ANALYZE stage_place_content;")
    conn.execute("ANALYZE stage_pairs; ANALYZE stage_files")
