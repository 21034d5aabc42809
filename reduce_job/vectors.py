"""Behaviour vectors, derived from the interaction table and the current content vectors.

    user u:   m_u = sum_p w_up c_p / sum_p w_up     over u's whole history
    place p:  b_p = sum_u w_up m_u / sum_u w_up     each user weighted by its own actions on p
    combined: normalise(c_p + b_p), or c_p while p has no behaviour vector

w_up = clicks * w_click + likes * w_like + bookmarks * w_bookmark (ACTION_WEIGHTS; other types
weigh 0). Only content vectors of the current space (the batch's model and place text version)
count, so no vector ever blends two models: a place embedded by another model contributes
nothing until a batch re-embeds it, and then its users are recomputed. A batch's own places
count with the content it brings (new, or the same bytes the database holds).

Per batch, a returning user's vector comes from its running sums (user_content_sums: float64
sum of w c and sum of w over its pairs in the space) plus the batch's own pairs: the cost follows
the batch, not the user's history. A user is recomputed in full, from its history, when it has no
sums yet, when a place it acted on changed content (content changes only with its model or text),
or when it is a held-back user the main server now knows (held_users.py).

A place's behaviour vector is the weighted mean of the vectors it holds for its users: for a user
recomputed in full, its new vector, carried into every place it acted on by exact deltas
b_p W_p += w_new m_new - w_old m_held; for a summed user, the vector it had at the last place
consolidation (`placed_vector`), with the batch's new weights. The run moves only the batch's
places for summed users; consolidate.py carries their new vectors into all their places later,
off the hourly path. After a consolidation, same actions give the same vectors whatever the
batch boundaries (to float32 rounding, which a rebuild resets). When the space itself changes
(another model, text version or weights) everything is recomputed.

This module only computes: it leaves `user_vectors_now` and `place_vectors_now` (temporary
tables of new values) for upsert.py, which writes each touched row once. The database picks
who and what is affected (`affected` users and the places they `touched`, numbered); the sums
are a blocked sparse product in numpy with double accumulation (vector_sums.py), in bounded memory.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
import psycopg

from reduce_job import vector_sums
from witple_batch.logs import event
from witple_batch.vector_space import ActionWeights, VectorSpace

log = logging.getLogger(__name__)


def weight_sql(alias: str) -> str:
    """A pair's weight from its counts and ACTION_WEIGHTS (other action types weigh 0)."""
    return f"({alias}.clicks * %(w_click)s + {alias}.likes * %(w_like)s + {alias}.bookmarks * %(w_bookmark)s)::float8"


# numbered in user order; whether the user has (or this batch gives it) a row: held-back users get
# no vector; and whether it is summed: its stored sums plus the batch's pairs make its vector
_NUMBERED = """
CREATE TEMP TABLE affected ON COMMIT DROP AS
SELECT s.user_id, (row_number() OVER (ORDER BY s.user_id) - 1)::int4 AS idx,
       EXISTS (SELECT 1 FROM user_behavior_vectors r WHERE r.user_id = s.user_id)
       OR EXISTS (SELECT 1 FROM user_sums u WHERE u.user_id = s.user_id) AS gets_row,
       NOT s.whole AND EXISTS (SELECT 1 FROM user_content_sums c WHERE c.user_id = s.user_id AND c.weight > 0)
       AND EXISTS (SELECT 1 FROM user_behavior_vectors r WHERE r.user_id = s.user_id AND r.vector_weight > 0) AS summed
FROM ({users}) s
"""

# The batch's users behind a materialised CTE: planned inline, PostgreSQL estimates the union at
# one row per batch pair and numbers them by an index scan of batch_pairs, a heap fetch per pair
# (a temporary table has no visibility map); materialised, it hashes and then sorts.
AFFECTED_BATCH = _NUMBERED.format(
    users="""
WITH batch_users AS MATERIALIZED (
    SELECT DISTINCT user_id, false AS whole FROM batch_pairs
    UNION ALL
    SELECT i.user_id, true FROM user_place_interactions i JOIN changed_content c USING (place_category, place_id)
    UNION ALL
    SELECT user_id, true FROM released_users
)
SELECT user_id, bool_or(whole) AS whole FROM batch_users GROUP BY user_id
"""
)

# everyone with history, and every vector of ours; an adopted row (weight 0: made by another
# system) without history here keeps what it has until this pipeline has data for it
AFFECTED_ALL = _NUMBERED.format(
    users="""
SELECT user_id, true AS whole FROM (
    SELECT user_id FROM user_place_interactions UNION SELECT user_id FROM user_behavior_vectors WHERE vector_weight > 0
) u
"""
)

# every place in the affected users' histories (a summed user's batch pairs only), numbered, and where
# its content of this space is, if anywhere
TOUCHED = """
CREATE TEMP TABLE touched ON COMMIT DROP AS
SELECT k.place_category, k.place_id, (row_number() OVER (ORDER BY k.place_category, k.place_id) - 1)::int4 AS idx,
       b.place_id IS NOT NULL AS from_batch,
       coalesce(CASE WHEN b.place_id IS NOT NULL THEN b.content IS NOT NULL
                     ELSE p.content_model = %(model)s AND p.place_text_version = %(text_version)s
                          AND p.content_vector IS NOT NULL END, false) AS in_space
FROM (
    SELECT i.place_category, i.place_id
    FROM affected a JOIN user_place_interactions i USING (user_id) WHERE NOT a.summed
    UNION
    SELECT b.place_category, b.place_id FROM affected a JOIN batch_pairs b USING (user_id) WHERE a.summed
) k
LEFT JOIN batch_places b USING (place_category, place_id)
LEFT JOIN place_vectors p USING (place_category, place_id)
"""

# every pair of the affected users by number (a summed user's batch pairs only), in user order: what
# vector_sums reads a block at a time. w_mean is what the pair adds to its user's sums: its whole
# weight when the user is recomputed in full, the batch's part of it when summed.
# The pairs are joined to `touched` last, behind a materialised CTE: PostgreSQL estimates a join
# on (place_category, place_id) as if the columns were independent, far too few rows, and would
# probe `affected` and `batch_pairs` by index for every pair. Inside the CTE each join keeps the
# plan its size calls for (index scans for a small batch on a long history, hashes for everything).
AFFECTED_PAIRS = f"""
CREATE TEMP TABLE affected_pairs ON COMMIT DROP AS
WITH pairs AS MATERIALIZED (
    SELECT a.idx, a.gets_row, a.summed, i.place_category, i.place_id,
           {weight_sql("i")} AS w_new, coalesce({weight_sql("b")}, 0) AS w_batch
    FROM affected a
    JOIN user_place_interactions i USING (user_id)
    LEFT JOIN batch_pairs b USING (user_id, place_category, place_id)
    WHERE NOT a.summed
    UNION ALL
    SELECT a.idx, a.gets_row, a.summed, i.place_category, i.place_id, {weight_sql("i")}, {weight_sql("b")}
    FROM affected a
    JOIN batch_pairs b USING (user_id)
    JOIN user_place_interactions i USING (user_id, place_category, place_id)
    WHERE a.summed
)
SELECT p.idx AS user_idx, t.idx AS place_idx, p.w_new,
       p.w_new - p.w_batch AS w_old,  -- before this batch
       CASE WHEN p.summed THEN p.w_batch ELSE p.w_new END AS w_mean,
       p.gets_row AND t.in_space AND p.w_new > 0 AS for_mean
FROM pairs p
JOIN touched t USING (place_category, place_id)
ORDER BY p.idx
"""

NUMBERED = [
    "CREATE UNIQUE INDEX ON affected (user_id)",
    "ANALYZE affected",
    TOUCHED,
    "CREATE UNIQUE INDEX ON touched (idx)",
    "CREATE UNIQUE INDEX ON touched (place_category, place_id)",
    "ANALYZE touched",
    AFFECTED_PAIRS,
    "CREATE INDEX ON affected_pairs (user_idx)",
    "ANALYZE affected_pairs",
]

# what the places hold for each affected user before this batch: its vector at the last consolidation
# if it moved since, else its stored vector, if it is ours
OLD_MEANS = """
CREATE TEMP TABLE old_means ON COMMIT DROP AS
SELECT idx, vector FROM (
    SELECT a.idx, coalesce(s.placed_vector, CASE WHEN u.vector_weight > 0 THEN u.behavior_vector END) AS vector
    FROM affected a LEFT JOIN user_behavior_vectors u USING (user_id) LEFT JOIN user_content_sums s USING (user_id)
) held
WHERE vector IS NOT NULL
"""
NO_OLD_MEANS = "CREATE TEMP TABLE old_means (idx int4, vector vector) ON COMMIT DROP"  # everything: built from zero

# what the places hold for each affected user after this run: a summed user's stays as it was
PLACED_MEANS_BATCH = """
CREATE TEMP TABLE placed_means ON COMMIT DROP AS
SELECT idx, vector FROM (
    SELECT a.idx, CASE WHEN a.summed THEN o.vector ELSE m.vector END AS vector
    FROM affected a LEFT JOIN user_means m USING (idx) LEFT JOIN old_means o USING (idx)
) held
WHERE vector IS NOT NULL
"""
PLACED_MEANS_ALL = "CREATE TEMP TABLE placed_means ON COMMIT DROP AS SELECT idx, vector FROM user_means"

USER_VECTORS_NOW = """
CREATE TEMP TABLE user_vectors_now ON COMMIT DROP AS
SELECT a.user_id, m.vector, coalesce(m.weight, 0) AS weight FROM affected a LEFT JOIN user_means m USING (idx)
"""

PLACE_VECTORS_NOW_BATCH = """
CREATE TEMP TABLE place_vectors_now ON COMMIT DROP AS
SELECT t.place_category, t.place_id, NULL::float8 AS vector_weight,
       CASE WHEN b.weight > 0 THEN b.vector END AS behavior_vector, b.weight AS behavior_weight
FROM place_behaviour b JOIN touched t USING (idx)
"""

PLACE_VECTORS_NOW_ALL = f"""
CREATE TEMP TABLE place_vectors_now ON COMMIT DROP AS
SELECT k.place_category, k.place_id, coalesce(a.weight, 0) AS vector_weight,
       CASE WHEN s.weight > 0 THEN s.vector END AS behavior_vector, coalesce(s.weight, 0) AS behavior_weight
FROM (
    SELECT place_category, place_id FROM user_place_interactions
    UNION SELECT place_category, place_id FROM batch_places
    UNION SELECT place_category, place_id FROM place_vectors WHERE behavior_weight > 0
) k
LEFT JOIN (
    SELECT place_category, place_id, sum({weight_sql("i")}) AS weight FROM user_place_interactions i GROUP BY 1, 2
) a USING (place_category, place_id)
LEFT JOIN (SELECT t.place_category, t.place_id, b.vector, b.weight FROM place_behaviour b JOIN touched t USING (idx)) s
    USING (place_category, place_id)
"""


def stored_space(conn: psycopg.Connection) -> VectorSpace | None:
    """The space the stored vectors were made in (vector_space), None before the first batch."""
    row = conn.execute("SELECT content_model, place_text_version, action_weights FROM vector_space").fetchone()
    return None if row is None else VectorSpace(row[0], row[1], ActionWeights(**row[2]))


def record_space(conn: psycopg.Connection, space: VectorSpace) -> None:
    assert space.weights is not None
    conn.execute(
        "INSERT INTO vector_space (id, content_model, place_text_version, action_weights) VALUES (true, %s, %s, %s)"
        " ON CONFLICT (id) DO UPDATE SET content_model = EXCLUDED.content_model,"
        " place_text_version = EXCLUDED.place_text_version, action_weights = EXCLUDED.action_weights,"
        # the published direction is the content's: new weights keep it, a new model or text clears it
        " content_direction = CASE WHEN (vector_space.content_model, vector_space.place_text_version)"
        " = (EXCLUDED.content_model, EXCLUDED.place_text_version) THEN vector_space.content_direction END,"
        " updated_at = now()",
        (space.model, space.text_version, orjson.dumps(space.weights.as_dict()).decode()),
    )


def compute(conn: psycopg.Connection, space: VectorSpace, *, everything: bool = False) -> dict[str, Any]:
    """New values for the users and places this batch changes (all of them when the space changed).

    Needs batch_pairs, batch_places, changed_content and the interactions upserted.
    """
    if not everything and stored_space(conn) != space:
        event(log, "vector space changed (model, place text version or weights): recomputing every vector")
        everything = True
    for statement in [AFFECTED_ALL if everything else AFFECTED_BATCH, *NUMBERED]:
        conn.execute(statement, space.sql_params())  # type: ignore[arg-type]
    conn.execute(NO_OLD_MEANS if everything else OLD_MEANS)
    conn.execute("CREATE UNIQUE INDEX ON old_means (idx)")
    users, places, summed = conn.execute(
        "SELECT (SELECT count(*) FROM affected), (SELECT count(*) FROM touched),"
        " (SELECT count(*) FILTER (WHERE summed) FROM affected)"
    ).fetchone()  # type: ignore[misc]
    user_blocks = vector_sums.blocks(conn, users)
    vector_sums.user_means(conn, user_blocks)
    conn.execute(USER_VECTORS_NOW)
    conn.execute(PLACED_MEANS_ALL if everything else PLACED_MEANS_BATCH)
    conn.execute("CREATE UNIQUE INDEX ON placed_means (idx)")
    vector_sums.place_behaviour(conn, user_blocks, places, batch=not everything)
    conn.execute(PLACE_VECTORS_NOW_ALL if everything else PLACE_VECTORS_NOW_BATCH, space.sql_params())  # type: ignore[arg-type]
    row = conn.execute(
        "SELECT (SELECT count(*) FROM user_vectors_now), (SELECT count(vector) FROM user_vectors_now),"
        " (SELECT count(*) FROM place_vectors_now)"
    ).fetchone()
    return {
        "mode": "everything" if everything else "batch",
        "users_recomputed": int(row[0]),  # type: ignore[index]
        "users_summed": int(summed),  # of those, from their sums and the batch, not their history
        "users_with_vectors": int(row[1]),  # type: ignore[index]
        "places_recomputed": int(row[2]),  # type: ignore[index]
    }
