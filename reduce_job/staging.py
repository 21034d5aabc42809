"""Binary COPY of the merged batch into temporary staging tables (dropped at commit)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import psycopg
from pgvector.psycopg import register_vector

from reduce_job.merge import BatchResult, split_place_keys
from witple_batch.aggregate import NULL_TIME, Stats

STAGING_DDL = """
CREATE TEMP TABLE stage_files (
    key text, etag text, size bigint, status text, reason text, records bigint, accepted bigint, rejected bigint
) ON COMMIT DROP;
CREATE TEMP TABLE stage_users (
    user_id text, clicks bigint, likes bigint, bookmarks bigint, other bigint, weight float8,
    first_us bigint, last_us bigint, vector vector(384)
) ON COMMIT DROP;
CREATE TEMP TABLE stage_places (
    place_category text, place_id text, clicks bigint, likes bigint, bookmarks bigint, other bigint, weight float8,
    first_us bigint, last_us bigint, content vector(384), behavior vector(384), behavior_weight float8
) ON COMMIT DROP;
CREATE TEMP TABLE stage_pairs (
    user_id text, place_category text, place_id text, clicks bigint, likes bigint, bookmarks bigint, other bigint,
    weight float8, first_us bigint, last_us bigint
) ON COMMIT DROP;
"""

_STATS_TYPES = ["int8", "int8", "int8", "int8", "float8", "int8", "int8"]


def _stat_columns(stats: Stats) -> list[Iterable[Any]]:
    """counts by type, weight, first/last time (NULL_TIME -> NULL), as Python columns."""
    first = [None if t == NULL_TIME else t for t in stats.first_us.tolist()]
    last = [None if t == NULL_TIME else t for t in stats.last_us.tolist()]
    counts = stats.counts.T.tolist()
    return [*counts, stats.weight.tolist(), first, last]


def _means(sums: np.ndarray, weight: np.ndarray) -> list[np.ndarray | None]:
    """Batch mean vector per row (float32), None where nothing weighted it."""
    safe = np.where(weight > 0, weight, 1.0)
    means = (sums / safe[:, None]).astype(np.float32)
    return [row if w > 0 else None for row, w in zip(means, weight.tolist(), strict=True)]


def _copy(cur: psycopg.Cursor, table: str, columns: Sequence[str], types: Sequence[str], rows: Iterable) -> int:
    count = 0
    with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)") as copy:  # type: ignore[arg-type]
        copy.set_types(list(types))
        for row in rows:
            copy.write_row(row)
            count += 1
    return count


def stage(conn: psycopg.Connection, batch: BatchResult) -> dict[str, int]:
    register_vector(conn)
    cur = conn.cursor()
    cur.execute(STAGING_DDL)
    counts = {}
    files = batch.files
    counts["files"] = _copy(
        cur,
        "stage_files",
        ("key", "etag", "size", "status", "reason", "records", "accepted", "rejected"),
        ["text", "text", "int8", "text", "text", "int8", "int8", "int8"],
        (
            (f["key"], f["etag"], f["size"], f["status"], f["reason"], f["records"], f["accepted"], f["rejected"])
            for f in files
        ),
    )
    stat_names = ("clicks", "likes", "bookmarks", "other", "weight", "first_us", "last_us")
    user_ids = [k.decode("utf-8") for k in batch.user_keys.tolist()]
    counts["users"] = _copy(
        cur,
        "stage_users",
        ("user_id", *stat_names, "vector"),
        ["text", *_STATS_TYPES, "vector"],
        zip(user_ids, *_stat_columns(batch.users), _means(batch.user_vector_sum, batch.users.weight), strict=True),
    )
    categories, place_ids = split_place_keys(batch.place_keys)
    pair_user, pair_place = batch.pair_indexes()
    behavior_sums, behavior_weight = batch.place_behavior(pair_user, pair_place)
    counts["places"] = _copy(
        cur,
        "stage_places",
        ("place_category", "place_id", *stat_names, "content", "behavior", "behavior_weight"),
        ["text", "text", *_STATS_TYPES, "vector", "vector", "float8"],
        zip(
            categories,
            place_ids,
            *_stat_columns(batch.places),
            list(batch.place_content),
            _means(behavior_sums, behavior_weight),
            behavior_weight.tolist(),
            strict=True,
        ),
    )
    counts["pairs"] = _copy(
        cur,
        "stage_pairs",
        ("user_id", "place_category", "place_id", *stat_names),
        ["text", "text", "text", *_STATS_TYPES],
        zip(
            (user_ids[i] for i in pair_user.tolist()),
            (categories[i] for i in pair_place.tolist()),
            (place_ids[i] for i in pair_place.tolist()),
            *_stat_columns(batch.pairs),
            strict=True,
        ),
    )
    cur.execute("ANALYZE stage_users; ANALYZE stage_places; ANALYZE stage_pairs; ANALYZE stage_files")
    return counts
