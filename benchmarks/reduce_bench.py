"""Writing vectors to PostgreSQL: the original's per-row INSERT vs our binary COPY + merge.

    .venv/bin/python benchmarks/reduce_bench.py [--users 100000] [--places 20000] [--baseline-rows 20000]

Same synthetic data, same embedded PostgreSQL 18 + pgvector, one run, indexes included:
  (a) the original's way: one INSERT ... ON CONFLICT per row, the vector passed as a Python
      list of floats into a real[] column (no vector index: real[] cannot have one);
  (b) ours, into the real schema: binary COPY into staging + INSERT .. SELECT .. ON CONFLICT
      merge, HNSW index on place vectors; first load, then an update batch touching 10%;
  (c) the 10% update twice more: HNSW maintained row by row vs dropped and rebuilt, and the
      vector merge in SQL (array_fill) vs in numpy after a binary COPY ... TO.
(a) runs on --baseline-rows rows and is reported as rows/s (it is linear in rows).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import psycopg
from pgvector.psycopg import register_vector

from local_stack.postgres import LocalPostgres
from reduce_job import indexes
from reduce_job.merge import BatchResult, make_pair_keys, make_place_keys
from reduce_job.schema import REDUCE_LOCK, migrate
from reduce_job.staging import stage
from reduce_job.upsert import _weighted_mean, upsert
from witple_batch.aggregate import Stats
from witple_batch.partials import id_array

DIM = 384


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _stats(rng: np.random.Generator, n: int) -> Stats:
    counts = rng.integers(0, 5, size=(n, 4)).astype(np.int64)
    counts[:, 0] += 1
    weight = counts[:, 0] * 1.0 + counts[:, 1] * 3.0 + counts[:, 2] * 5.0
    first = np.full(n, 1_736_949_600_000_000, np.int64)
    return Stats(counts=counts, weight=weight, first_us=first, last_us=first + 3_600_000_000)


def synthetic_batch(users: int, places: int, seed: int, user_offset: int = 0) -> BatchResult:
    rng = np.random.default_rng(seed)
    batch = BatchResult()
    batch.user_keys = np.sort(id_array([f"user-{i:07d}" for i in range(user_offset, user_offset + users)]))
    batch.users = _stats(rng, users)
    batch.user_vector_sum = _unit(rng, users).astype(np.float64) * batch.users.weight[:, None]
    cats = id_array([("restaurants", "nature", "shopping")[i % 3] for i in range(places)])
    ids = id_array([f"{100000 + i}" for i in range(places)])
    batch.place_keys = np.sort(make_place_keys(cats, ids))
    batch.places = _stats(rng, places)
    batch.place_content = _unit(rng, places)
    pair_users = batch.user_keys[np.arange(users)]  # one interaction per user keeps (b) comparable to (a)
    pair_places = batch.place_keys[rng.integers(0, places, size=users)]
    order = np.lexsort((pair_places, pair_users))
    batch.pair_keys = make_pair_keys(pair_users[order], pair_places[order])
    batch.pairs = _stats(rng, users)
    return batch


def baseline(url: str, batch: BatchResult, rows: int) -> float:
    """The original: a statement per row, vectors as float lists into real[]."""
    with psycopg.connect(url) as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS baseline_users (user_id text PRIMARY KEY, behavior_vector real[],"
            " total_actions int, updated_at timestamptz)"
        )
        users = [k.decode() for k in batch.user_keys[:rows].tolist()]
        vectors = (batch.user_vector_sum[:rows] / batch.users.weight[:rows, None]).astype(np.float32)
        started = time.perf_counter()
        with conn.cursor() as cur:
            for uid, vector, total in zip(users, vectors, batch.users.counts[:rows].sum(axis=1).tolist(), strict=True):
                cur.execute(
                    "INSERT INTO baseline_users (user_id, behavior_vector, total_actions, updated_at) "
                    "VALUES (%s, %s, %s, now()) ON CONFLICT (user_id) DO UPDATE SET "
                    "behavior_vector = EXCLUDED.behavior_vector, total_actions = baseline_users.total_actions + "
                    "EXCLUDED.total_actions, updated_at = now()",
                    (uid, vector.tolist(), total),
                )
        conn.commit()
        return time.perf_counter() - started


def ours(url: str, batch: BatchResult, rebuild_fraction: float) -> dict[str, float]:
    with psycopg.connect(url) as conn:
        started = time.perf_counter()
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (REDUCE_LOCK,))
            t = time.perf_counter()
            stage(conn, batch)
            copy_s = time.perf_counter() - t
            rebuild = indexes.plan_indexes(conn, [indexes.PLACE_INDEX], [], rebuild_fraction)
            t = time.perf_counter()
            upsert(conn)
            upsert_s = time.perf_counter() - t
            t = time.perf_counter()
            indexes.build_indexes(conn, rebuild)
            index_s = time.perf_counter() - t
        conn.execute("ANALYZE place_vectors")
        return {"total": time.perf_counter() - started, "copy": copy_s, "upsert": upsert_s, "index": index_s}


def vector_merge_paths(url: str, batch: BatchResult) -> tuple[float, float]:
    """Merged user vectors for a staged update batch: in SQL with array_fill, or in numpy after COPY TO."""
    with psycopg.connect(url) as conn:
        register_vector(conn)
        stage(conn, batch)
        merged = _weighted_mean("o.behavior_vector", "o.vector_weight", "s.vector", "s.weight")
        started = time.perf_counter()
        conn.execute(
            f"SELECT sum(vector_norm({merged})) FROM stage_users s "
            "JOIN user_behavior_vectors o ON o.user_id = s.user_id"
        ).fetchone()
        sql_s = time.perf_counter() - started

        started = time.perf_counter()
        ids, old, old_w, new, new_w = [], [], [], [], []
        with conn.cursor().copy(
            "COPY (SELECT s.user_id, o.behavior_vector, o.vector_weight, s.vector, s.weight FROM stage_users s "
            "JOIN user_behavior_vectors o ON o.user_id = s.user_id) TO STDOUT (FORMAT BINARY)"
        ) as copy:
            copy.set_types(["text", "vector", "float8", "vector", "float8"])
            for uid, v_old, w_old, v_new, w_new in copy.rows():
                ids.append(uid)
                old.append(v_old.to_numpy())
                old_w.append(w_old)
                new.append(v_new.to_numpy())
                new_w.append(w_new)
        w_old_a, w_new_a = np.array(old_w), np.array(new_w)
        result = (np.stack(old) * w_old_a[:, None] + np.stack(new) * w_new_a[:, None]) / (w_old_a + w_new_a)[:, None]
        numpy_s = time.perf_counter() - started
        assert result.shape == (len(ids), DIM)
        conn.rollback()
        return sql_s, numpy_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--places", type=int, default=20_000)
    parser.add_argument("--baseline-rows", type=int, default=20_000)
    args = parser.parse_args()

    first = synthetic_batch(args.users, args.places, seed=1)
    touched_users, touched_places = args.users // 10, args.places // 10
    update = synthetic_batch(touched_users, touched_places, seed=2)
    rows_first = args.users + args.places
    rows_update = touched_users + touched_places
    with LocalPostgres.running() as pg:
        with psycopg.connect(pg.url, autocommit=True) as conn:
            migrate(conn)
        base_s = baseline(pg.url, first, args.baseline_rows)
        load = ours(pg.url, first, rebuild_fraction=0.15)
        incremental = ours(pg.url, update, rebuild_fraction=1e9)  # keep the index, maintain row by row
        rebuilt = ours(pg.url, update, rebuild_fraction=0.0)  # drop and rebuild
        sql_s, numpy_s = vector_merge_paths(pg.url, synthetic_batch(touched_users, touched_places, seed=3))

    base_rate = args.baseline_rows / base_s
    print(f"users {args.users:,}, places {args.places:,}; update batch touches 10% ({rows_update:,} rows)")
    print(f"{'contender':<58}{'rows':>9}{'seconds':>9}{'rows/s':>10}{'vs (a)':>8}")
    lines = [
        ("(a) original: INSERT per row, real[] vector", args.baseline_rows, base_s),
        ("(b) ours: COPY + merge, first load (index rebuilt)", rows_first, load["total"]),
        ("(b) ours: COPY + merge, 10% update (index per row)", rows_update, incremental["total"]),
        ("(c) ours: 10% update, index dropped and rebuilt", rows_update, rebuilt["total"]),
    ]
    for label, rows, seconds in lines:
        print(f"{label:<58}{rows:>9,}{seconds:>9.2f}{rows / seconds:>10,.0f}{rows / seconds / base_rate:>7.1f}x")
    print(f"first load stages: copy {load['copy']:.2f}s, merge {load['upsert']:.2f}s, HNSW build {load['index']:.2f}s")
    print(
        f"10% update, index per row: merge (incl. HNSW upkeep) {incremental['upsert']:.2f}s; "
        f"rebuilt: merge {rebuilt['upsert']:.2f}s + build {rebuilt['index']:.2f}s"
    )
    print(
        f"merging {touched_users:,} user vectors: SQL array_fill {sql_s:.2f}s vs numpy after binary COPY TO "
        f"{numpy_s:.2f}s ({numpy_s / sql_s:.1f}x)"
    )


if __name__ == "__main__":
    main()
