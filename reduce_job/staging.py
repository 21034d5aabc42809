"""Moving each shard's partial into session-temporary staging tables, one shard at a time.

Rows are staged as the shards wrote them (pairs refer to their shard's user and place lists by
index); summing across shards is the database's job (upsert.BATCH_TABLES), so the reduce holds
one shard's arrays at a time, whatever the batch's distinct users and shard count. Pairs and
content vectors go as binary COPY built with numpy; ids as text COPY.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import orjson
import psycopg

from reduce_job.binary_copy import Column, rows
from witple_batch.partials import ShardPartial

STAGING_DDL = """
CREATE TEMP TABLE stage_user_keys (shard int NOT NULL, idx int NOT NULL, user_id text NOT NULL);
CREATE TEMP TABLE stage_place_keys (
    shard int NOT NULL, idx int NOT NULL, place_category text NOT NULL, place_id text NOT NULL
);
CREATE TEMP TABLE stage_place_content (
    shard int NOT NULL, idx int NOT NULL, content vector(384) NOT NULL, text_sha256 bytea NOT NULL,
    catalogued boolean NOT NULL
);
CREATE TEMP TABLE stage_pairs (
    shard int NOT NULL, user_idx int NOT NULL, place_idx int NOT NULL,
    clicks bigint NOT NULL, likes bigint NOT NULL, bookmarks bigint NOT NULL, other bigint NOT NULL,
    first_us bigint NOT NULL, last_us bigint NOT NULL
);
CREATE TEMP TABLE stage_files (
    key text, etag text, size bigint, status text, reason text, records bigint, accepted bigint, rejected bigint,
    rejects_by_reason jsonb, envelope_batch_id text
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


def _copy_binary(cur: psycopg.Cursor, table: str, columns: list[Column]) -> None:
    with cur.copy(f"COPY {table} FROM STDIN (FORMAT BINARY)") as copy:  # type: ignore[arg-type]
        for chunk in rows(columns):
            copy.write(chunk)


def stage_partial(conn: psycopg.Connection, shard: int, partial: ShardPartial) -> None:
    with conn.cursor() as cur:
        _copy_text(
            cur,
            "stage_user_keys",
            (f"{shard}\t{i}\t{user.translate(_TEXT_ESCAPES)}\n" for i, user in enumerate(partial.user_ids)),
        )
        _copy_text(
            cur,
            "stage_place_keys",
            (
                f"{shard}\t{i}\t{category.translate(_TEXT_ESCAPES)}\t{place.translate(_TEXT_ESCAPES)}\n"
                for i, (category, place) in enumerate(zip(partial.place_categories, partial.place_ids, strict=True))
            ),
        )
        n_places = len(partial.place_ids)
        _copy_binary(
            cur,
            "stage_place_content",
            [
                Column("int4", np.full(n_places, shard, np.int32)),
                Column("int4", np.arange(n_places, dtype=np.int32)),
                Column("vector", partial.place_content),
                Column("bytea", partial.place_text_sha256),
                Column("bool", partial.place_catalogued),
            ],
        )
        n_pairs = len(partial.pair_user)
        counts = partial.pair_counts
        _copy_binary(
            cur,
            "stage_pairs",
            [
                Column("int4", np.full(n_pairs, shard, np.int32)),
                Column("int4", partial.pair_user),
                Column("int4", partial.pair_place),
                *(Column("int8", counts[:, column]) for column in range(counts.shape[1])),
                Column("int8", partial.pair_first_us),
                Column("int8", partial.pair_last_us),
            ],
        )
        stage_files(cur, partial.files)


def stage_files(cur: psycopg.Cursor, files: list[dict[str, Any]]) -> None:
    columns = ("key", "etag", "size", "status", "reason", "records", "accepted", "rejected")
    with cur.copy(
        f"COPY stage_files ({', '.join(columns)}, rejects_by_reason, envelope_batch_id) FROM STDIN"  # type: ignore[arg-type]
    ) as copy:
        for f in files:
            copy.write_row(
                [
                    *(f.get(c) for c in columns),
                    orjson.dumps(f.get("rejects_by_reason") or {}).decode(),
                    f.get("envelope_batch_id"),
                ]
            )


def analyze(conn: psycopg.Connection) -> None:
    conn.execute("ANALYZE stage_user_keys; ANALYZE stage_place_keys; ANALYZE stage_place_content;")
    conn.execute("ANALYZE stage_pairs; ANALYZE stage_files")
