"""The sums behind the behaviour vectors, as a blocked sparse product in numpy (double precision).

    user u:   m_u = sum_p w_up c_p / sum_p w_up                  user_means
              (a summed user: its stored sums plus the batch's pairs)
    place p:  d_p = sum_u (w_new m_new - w_old m_old), then      place_behaviour
              b_p = (W_p b_p + d_p) / (W_p + sum of signed weights)

pgvector's `avg` aggregated every pair's 384 floats one row at a time (6 s of a 200k-action
batch's reduce). Here the database joins and sends each pair as two integers and two weights
(24 bytes), and the content vectors and user means those pairs need; numpy gathers and sums.

Memory is bounded by the constants below, not by users, places or history:
  * users go in blocks of consecutive affected users that start within PAIRS_PER_BLOCK pairs
    and USERS_PER_BLOCK users (so under twice as many pairs, and so under 32k distinct
    places; a single user with more is bounded by the place catalogue). A block holds its
    pairs (24 B each), its summed users' stored sums (3 KB, freed once copied), a float64 sum
    and a float32 mean per user (4.5 KB), or the new and old means of its users and their
    difference (4.5 KB);
  * content vectors (1.5 KB) are kept across blocks up to CONTENT_CACHE places, or one
    block's places: fetched once while the places touched fit, about once per block beyond;
    a refill briefly holds the old, the kept and the new vectors;
  * pairs are gathered GATHER_ROWS at a time (1.5 KB each, summed into 3 KB, added through
    a 3 KB gathered copy), or, where they fill DENSE_FILL of their keys x rows, summed as a
    matrix of at most MATRIX_CELLS (16 MB), GATHER_ROWS rows and keys at a time (9 KB each);
  * places are summed PLACES_PER_PASS at a time (3 KB each, 1.5 KB out): one pass over the
    user blocks per range of places, each reading only its own pairs and their users' means.
At the constants the user stage peaks near 8k x 7.5 KB + 3 x 32k x 1.5 KB + 1k x 7.5 KB
(about 215 MB, only when a block's places are all new to the cache; its matrix comes after
the refill, when the cache holds one block's places) and the place stage near 16k x 4.5 KB +
8k x 4.5 KB + 16 MB + 1k x 9 KB (about 135 MB), whatever the data;
`python -m benchmarks.scale reduce` measures the reduce's peak (193 MiB in all at 0.1 M users).
The database side holds affected_pairs (about 50 B per pair, in temporary files when large).

Needs the temporary tables vectors.py makes: affected (idx, user_id, summed), affected_pairs
(user_idx, place_idx, w_new, w_old, w_mean, for_mean), touched (place_category, place_id, idx,
from_batch, in_space), placed_means (idx, vector) and, for a batch, old_means (idx, vector).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import psycopg

from reduce_job.binary_copy import Column, copy_in, read
from witple_batch.model_files import EMBEDDING_DIM

PAIRS_PER_BLOCK = 16_384
USERS_PER_BLOCK = 8_192
PLACES_PER_PASS = 16_384
GATHER_ROWS = 1_024  # a gather's float32 products (1.5 MB) are summed while still in a core's cache
CONTENT_CACHE = 16_384  # places' content vectors kept across user blocks
DENSE_FILL = 1 / 64  # pairs this full are summed as a matrix product (it pays from ~1.2%: benchmarks.scale vector-sums)
MATRIX_CELLS = int(2 * PAIRS_PER_BLOCK / DENSE_FILL)  # 16 MB of float64, a block's pairs at DENSE_FILL
EPSILON_WEIGHT = 1e-9  # a place whose weighted users cancel to ~0 has no behaviour vector


BLOCK_STARTS = """
SELECT min(user_idx) FROM (  -- a block: the users that start within PAIRS_PER_BLOCK pairs and USERS_PER_BLOCK users
    SELECT user_idx, div(sum(n) OVER w - n, %(pairs)s) AS by_pairs, div(row_number() OVER w - 1, %(users)s) AS by_users
    FROM (SELECT user_idx, count(*) AS n FROM affected_pairs GROUP BY user_idx) c
    WINDOW w AS (ORDER BY user_idx)
) s GROUP BY by_pairs, by_users ORDER BY 1
"""

_PAIRS = "SELECT user_idx, place_idx, w_new, w_old FROM affected_pairs WHERE user_idx >= %(lo)s AND user_idx < %(hi)s"
PAIR_FIELDS = [("user", "int4", 0), ("place", "int4", 0), ("w_new", "float8", 0), ("w_old", "float8", 0)]
PAIRS_FOR_MEANS = (
    "SELECT user_idx, place_idx, w_mean FROM affected_pairs WHERE user_idx >= %(lo)s AND user_idx < %(hi)s AND for_mean"
)
MEAN_FIELDS = [("user", "int4", 0), ("place", "int4", 0), ("weight", "float8", 0)]
SUM_BYTES = 8 * EMBEDDING_DIM  # a user's content_sum: 384 float64, little-endian
SUM_FIELDS = [("user", "int4", 0), ("sum", "bytea", SUM_BYTES), ("weight", "float8", 0)]
STORED_SUMS = """
SELECT a.idx, c.content_sum, c.weight FROM affected a JOIN user_content_sums c USING (user_id)
WHERE a.summed AND a.idx >= %(lo)s AND a.idx < %(hi)s
"""
PAIRS_FOR_PLACES = _PAIRS + " AND place_idx >= %(place_lo)s AND place_idx < %(place_hi)s"

CONTENT = """
SELECT t.idx, CASE WHEN t.from_batch THEN b.content ELSE p.content_vector END
FROM touched t
LEFT JOIN batch_places b USING (place_category, place_id)
LEFT JOIN place_vectors p USING (place_category, place_id)
WHERE t.idx = ANY(%(places)s) AND t.in_space
"""
NEW_MEANS = "SELECT idx, vector FROM placed_means WHERE idx = ANY(%(users)s)"
OLD_MEANS = "SELECT idx, vector FROM old_means WHERE idx = ANY(%(users)s)"
STORED_BEHAVIOUR = """
SELECT t.idx, coalesce(p.behavior_vector, witple_zero()), coalesce(p.behavior_weight, 0)::float8
FROM touched t JOIN place_vectors p USING (place_category, place_id)
WHERE t.idx >= %(place_lo)s AND t.idx < %(place_hi)s
"""
VECTOR = [("idx", "int4", 0), ("vector", "vector", EMBEDDING_DIM)]


Blocks = list[tuple[int, int]]


def blocks(conn: psycopg.Connection, users: int) -> Blocks:
    """Ranges of user idx in [0, users): each under 2 x PAIRS_PER_BLOCK pairs (or one user's) and
    USERS_PER_BLOCK users; a few integers per PAIRS_PER_BLOCK pairs."""
    bounds = {"pairs": PAIRS_PER_BLOCK, "users": USERS_PER_BLOCK}
    starts = [int(r[0]) for r in conn.execute(BLOCK_STARTS, bounds).fetchall()]  # type: ignore[index]
    starts = sorted({0, *starts})
    return list(zip(starts, [*starts[1:], users], strict=True))


def _rows_of(idx: np.ndarray, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where each of `wanted` sits in `idx` (distinct values), and whether it is there at all."""
    if not len(idx):
        return np.zeros(len(wanted), dtype=np.intp), np.zeros(len(wanted), dtype=bool)
    order = np.argsort(idx)
    at = np.searchsorted(idx, wanted, sorter=order).clip(max=len(idx) - 1)
    rows_ = order[at]
    return rows_, idx[rows_] == wanted


def _runs(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct values of sorted `keys` and where each run starts."""
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    return keys[starts], starts


def _sum_by_key(
    keys: np.ndarray, vectors: np.ndarray, rows_: np.ndarray, weights: np.ndarray
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """sum(weights * vectors[rows_]) per key, GATHER_ROWS pairs at a time.

    Products in float32, sums in float64: what pgvector's avg of scaled vectors did, at twice
    the speed of float64 products. Yields (keys, sums) per gathered chunk; a key may recur
    across chunks (callers add).
    """
    order = np.argsort(keys, kind="stable")
    weights32 = weights.astype(np.float32)
    for start in range(0, len(order), GATHER_ROWS):
        chunk = order[start : start + GATHER_ROWS]
        chunk_keys, starts = _runs(keys[chunk])
        products = vectors[rows_[chunk]] * weights32[chunk, None]
        yield chunk_keys, np.add.reduceat(products, starts, axis=0, dtype=np.float64)


def _add_products(
    out: np.ndarray, keys: np.ndarray, vectors: np.ndarray, rows_: np.ndarray, weights: np.ndarray
) -> None:
    """out[k] += w * vectors[r] for every pair (k, r, w).

    Pairs that fill at least DENSE_FILL of their distinct keys x rows are summed as a float64
    matrix product (BLAS): a long history on a small catalogue fills a block's users x places
    densely, and the product then beats the gather several times (benchmarks.scale vector-sums). Sparser
    pairs, and any that would need more than MATRIX_CELLS, are gathered (_sum_by_key). The
    matrix is multiplied GATHER_ROWS rows by GATHER_ROWS keys at a time (9 KB per row: the
    float64 copy of a gathered vector, a key's product and its copy out of `out`). The two
    paths round differently: float64 products against float32 ones, a float32 rounding per product.
    """
    if not len(keys):
        return
    distinct_keys, key_at = np.unique(keys, return_inverse=True)
    distinct_rows, row_at = np.unique(rows_, return_inverse=True)
    cells = len(distinct_keys) * len(distinct_rows)
    if len(keys) < DENSE_FILL * cells or cells > MATRIX_CELLS:
        for chunk_keys, sums in _sum_by_key(keys, vectors, rows_, weights):
            out[chunk_keys] += sums
        return
    matrix = np.bincount(key_at * len(distinct_rows) + row_at, weights, cells).reshape(len(distinct_keys), -1)
    for column in range(0, len(distinct_rows), GATHER_ROWS):
        columns = slice(column, column + GATHER_ROWS)
        gathered = vectors[distinct_rows[columns]].astype(np.float64)
        for key in range(0, len(distinct_keys), GATHER_ROWS):
            tile = slice(key, key + GATHER_ROWS)
            out[distinct_keys[tile]] += matrix[tile, columns] @ gathered


class _ContentCache:
    """Content vectors by place idx, each fetched once while the places fit CONTENT_CACHE.

    Blocks share most places; beyond the cap only the current block's places are kept, so it
    holds max(CONTENT_CACHE, one block's places) vectors.
    """

    def __init__(self) -> None:
        self.idx = np.empty(0, dtype=np.int32)
        self.vectors = np.empty((0, EMBEDDING_DIM), dtype=np.float32)

    def take(self, conn: psycopg.Connection, places: np.ndarray) -> dict[str, np.ndarray]:
        missing = np.setdiff1d(places, self.idx, assume_unique=True)
        if len(missing):
            kept = np.isin(self.idx, places) if len(self.idx) + len(missing) > CONTENT_CACHE else slice(None)
            got = [read(conn, CONTENT, {"places": ids.tolist()}, VECTOR) for ids in _slices(missing, CONTENT_CACHE)]
            self.idx = np.concatenate([self.idx[kept], *(g["idx"] for g in got)])
            self.vectors = np.concatenate([self.vectors[kept], *(g["vector"] for g in got)])
        return {"idx": self.idx, "vector": self.vectors}


def _slices(values: np.ndarray, size: int) -> Iterator[np.ndarray]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def user_means(conn: psycopg.Connection, user_blocks: Blocks) -> None:
    """Every affected user's weighted mean of content into user_means (idx, vector, weight,
    content_sum: the float64 sums, 3 KB); none if it has no weight."""
    conn.execute(
        "CREATE TEMP TABLE user_means (idx int4 PRIMARY KEY, vector vector, weight float8, content_sum bytea)"
        " ON COMMIT DROP"
    )
    cache = _ContentCache()
    for lo, hi in user_blocks:
        pairs = read(conn, PAIRS_FOR_MEANS, {"lo": lo, "hi": hi}, MEAN_FIELDS)
        stored = read(conn, STORED_SUMS, {"lo": lo, "hi": hi}, SUM_FIELDS)
        users = np.unique(np.concatenate([pairs["user"], stored["user"]]))
        if not len(users):
            continue
        sums = np.zeros((len(users), EMBEDDING_DIM))
        weights = np.zeros(len(users))
        at = np.searchsorted(users, stored["user"])
        sums[at] = stored["sum"].view("<f8")
        weights[at] = stored["weight"]
        del stored
        if len(pairs["user"]):
            content = cache.take(conn, np.unique(pairs["place"]))
            rows_, found = _rows_of(content["idx"], pairs["place"])
            if not found.all():  # touched.in_space promised content: never sum a wrong row
                raise RuntimeError("a place in the space has no content vector")
            user_at = np.searchsorted(users, pairs["user"])
            _add_products(sums, user_at, content["vector"], rows_, pairs["weight"])
            weights += np.bincount(user_at, pairs["weight"], len(users))
        kept = weights > EPSILON_WEIGHT
        if not kept.all():  # users of weight 0 have no vector and keep no sums
            users, sums, weights = users[kept], sums[kept], weights[kept]
        means = np.empty((len(users), EMBEDDING_DIM), dtype=np.float32)
        for rows_ in _slices(np.arange(len(users)), GATHER_ROWS):
            means[rows_] = sums[rows_] / weights[rows_, None]
        content_sums = sums.view(np.uint8)  # float64, little-endian on every platform this runs on
        with conn.cursor() as cur:
            copy_in(
                cur,
                "user_means",
                [
                    Column("int4", users),
                    Column("vector", means),
                    Column("float8", weights),
                    Column("bytea", content_sums),
                ],
            )
    conn.execute("ANALYZE user_means")


def place_behaviour(conn: psycopg.Connection, user_blocks: Blocks, places: int, *, batch: bool) -> None:
    """Every touched place's new behaviour vector into place_behaviour (idx, vector, weight; weight 0: none).

    A batch moves the stored vectors by its users' signed deltas; otherwise (everything
    recomputed) they are built from zero. Only places some user moved get a row.
    """
    conn.execute("CREATE TEMP TABLE place_behaviour (idx int4, vector vector, weight float8) ON COMMIT DROP")
    for place_lo in range(0, places, PLACES_PER_PASS):
        place_hi = min(place_lo + PLACES_PER_PASS, places)
        span = {"place_lo": place_lo, "place_hi": place_hi}
        delta = np.zeros((place_hi - place_lo, EMBEDDING_DIM))
        delta_weight = np.zeros(place_hi - place_lo)
        moved = np.zeros(place_hi - place_lo, dtype=bool)
        for lo, hi in user_blocks:
            block = {**span, "lo": lo, "hi": hi}
            _add_block(conn, block, delta, delta_weight, moved, batch=batch)
        if batch:  # the stored vectors, moved by the deltas
            stored = read(conn, STORED_BEHAVIOUR, span, [*VECTOR, ("weight", "float8", 0)])
            for rows_ in _slices(np.arange(len(stored["idx"])), GATHER_ROWS):
                local = stored["idx"][rows_] - place_lo
                delta[local] += stored["vector"][rows_] * stored["weight"][rows_, None]
                delta_weight[local] += stored["weight"][rows_]
            del stored
        _write_places(conn, place_lo, moved, delta, delta_weight)
    conn.execute("ANALYZE place_behaviour")


def _add_block(
    conn: psycopg.Connection,
    block: dict[str, Any],
    delta: np.ndarray,
    delta_weight: np.ndarray,
    moved: np.ndarray,
    *,
    batch: bool,
) -> None:
    """One user block's signed contributions to the places of one range (its arrays freed on return).

    A batch adds w_new m_new - w_old m_old per pair. Most pairs of a long history did not change
    in the batch (w_new == w_old) and their users have both means: those add w (m_new - m_old),
    one gather instead of two, from a difference taken once per user (and more accurate: the
    difference of two close float32 means is exact, that of their two products is not).
    """
    pairs = read(conn, PAIRS_FOR_PLACES, block, PAIR_FIELDS)
    if not len(pairs["user"]):
        return
    users_here = {"users": np.unique(pairs["user"]).tolist()}
    local = pairs["place"] - block["place_lo"]
    new = read(conn, NEW_MEANS, users_here, VECTOR)
    new_rows, new_has = _paired_means(new, pairs["user"], pairs["w_new"])
    delta_weight += np.bincount(local[new_has], pairs["w_new"][new_has], len(delta_weight))
    moved[local[new_has]] = True
    same = np.zeros_like(new_has)  # the batch's unchanged pairs, added as differences
    more = []
    if batch:
        old = read(conn, OLD_MEANS, users_here, VECTOR)
        old_rows, old_has = _paired_means(old, pairs["user"], pairs["w_old"])
        delta_weight -= np.bincount(local[old_has], pairs["w_old"][old_has], len(delta_weight))
        moved[local[old_has]] = True
        same = new_has & old_has & (pairs["w_new"] == pairs["w_old"])
        more.append((old["vector"], old_rows, old_has & ~same, -pairs["w_old"]))
        if same.any():
            at, _ = _rows_of(old["idx"], new["idx"])  # rows of users without an old mean: never gathered
            difference = old["vector"][at]
            np.subtract(new["vector"], difference, out=difference)  # in place: 1.5 KB per user, not 3
            more.append((difference, new_rows, same, pairs["w_new"]))
    for vectors, rows_, has, weights in [(new["vector"], new_rows, new_has & ~same, pairs["w_new"]), *more]:
        _add_products(delta, local[has], vectors, rows_[has], weights[has])


def _paired_means(
    means: dict[str, np.ndarray], users: np.ndarray, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Each pair's row in `means`, and whether the pair counts: its user has a mean and it weighs > 0."""
    rows_, found = _rows_of(means["idx"], users)
    return rows_, found & (weights > 0)


def _write_places(
    conn: psycopg.Connection, place_lo: int, moved: np.ndarray, sums: np.ndarray, totals: np.ndarray
) -> None:
    local = np.flatnonzero(moved)
    total = totals[local]
    kept = total > EPSILON_WEIGHT
    vectors = np.zeros((len(local), EMBEDDING_DIM), dtype=np.float32)
    for rows_ in _slices(np.flatnonzero(kept), GATHER_ROWS):
        vectors[rows_] = sums[local[rows_]] / total[rows_, None]
    with conn.cursor() as cur:
        copy_in(
            cur,
            "place_behaviour",
            [
                Column("int4", (local + place_lo).astype(np.int32)),
                Column("vector", vectors),
                Column("float8", np.where(kept, total, 0.0)),
            ],
        )
