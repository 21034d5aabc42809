"""Behaviour vectors, derived from the interaction table and the current content vectors.

    user u:   m_u = sum_p w_up c_p / sum_p w_up     over u's whole history
    place p:  b_p = sum_u w_up m_u / sum_u w_up     each user weighted by its own actions on p
    combined: normalise(c_p + b_p), or c_p while p has no behaviour vector

w_up = clicks * w_click + likes * w_like + bookmarks * w_bookmark (ACTION_WEIGHTS; other types
weigh 0). Only content vectors of the current space (the batch's model and place text version)
count, so no vector ever blends two models: a place embedded by another model contributes
nothing until a batch re-embeds it, and then its users are recomputed. A batch's own places
count with the content it brings (new, or the same bytes the database holds).

Per batch, the users recomputed (in full, from their history) are the batch's users, the users
of places whose content changed, and held-back users the main server now knows (held_users.py).
A place's behaviour vector stays exact by deltas over exactly those users' pairs:
b_p W_p += sum_u (w_new m_new - w_old m_old). Same actions, same vectors, whatever the batch
boundaries (to float32 rounding, which a rebuild resets). When the space itself changes
(another model, text version or weights) everything is recomputed.

This module only computes: it leaves `user_vectors_now` and `place_vectors_now` (temporary
tables of new values) for upsert.py, which writes each touched row once. Sums use pgvector's
avg (double precision accumulation) times the count, since its sum accumulates in float32.
The database does the arithmetic: moving every pair's 384 floats out and back costs more.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
import psycopg

from witple_batch.logs import event

log = logging.getLogger(__name__)

EPSILON_WEIGHT = 1e-9  # a place whose weighted users cancel to ~0 has no behaviour vector


def _w(alias: str) -> str:
    return f"({alias}.clicks * %(wc)s + {alias}.likes * %(wl)s + {alias}.bookmarks * %(wb)s)::float8"


AFFECTED_BATCH = """
CREATE TEMP TABLE affected ON COMMIT DROP AS
SELECT user_id FROM batch_pairs
UNION
SELECT i.user_id FROM user_place_interactions i JOIN changed_content c USING (place_category, place_id)
UNION
SELECT user_id FROM released_users
"""

# everyone with history, and every vector of ours; an adopted row (weight 0: made by another
# system) without history here keeps what it has until this pipeline has data for it
AFFECTED_ALL = """
CREATE TEMP TABLE affected ON COMMIT DROP AS
SELECT user_id FROM user_place_interactions UNION SELECT user_id FROM user_behavior_vectors WHERE vector_weight > 0
"""

# what each affected user gave places before this batch: its stored vector, if it is ours
OLD_MEANS = """
CREATE TEMP TABLE old_means ON COMMIT DROP AS
SELECT u.user_id, u.behavior_vector AS vector
FROM affected a JOIN user_behavior_vectors u USING (user_id)
WHERE u.behavior_vector IS NOT NULL AND u.vector_weight > 0
"""

# every affected user's mean from its whole history; a user with no row (held back) has none.
# Pairs are first averaged per (user, weight): most pairs weigh the same (one click), so the
# scalar products happen per group, not per pair; sum_p w c_p = sum_groups w * n * mean.
USER_VECTORS_NOW = f"""
CREATE TEMP TABLE user_vectors_now ON COMMIT DROP AS
SELECT a.user_id, m.vector, coalesce(m.weight, 0) AS weight
FROM affected a
LEFT JOIN (
    SELECT g.user_id, witple_scale(avg(witple_scale(g.mean, g.w * g.n)), count(*) / sum(g.w * g.n)) AS vector,
           sum(g.w * g.n) AS weight
    FROM (
        SELECT i.user_id, {_w("i")} AS w, count(*) AS n, avg(c.content) AS mean
        FROM affected a
        JOIN user_place_interactions i USING (user_id)
        LEFT JOIN batch_places b USING (place_category, place_id)
        LEFT JOIN place_vectors p USING (place_category, place_id)
        CROSS JOIN LATERAL (
            SELECT CASE WHEN b.place_id IS NOT NULL THEN b.content
                        WHEN p.content_model = %(model)s AND p.place_text_version = %(text_version)s
                        THEN p.content_vector END AS content
        ) c
        WHERE {_w("i")} > 0 AND c.content IS NOT NULL
          AND (EXISTS (SELECT 1 FROM user_behavior_vectors r WHERE r.user_id = i.user_id)
               OR EXISTS (SELECT 1 FROM user_sums s WHERE s.user_id = i.user_id))  -- has, or gets, a row
        GROUP BY i.user_id, {_w("i")}
    ) g
    GROUP BY g.user_id
) m USING (user_id)
"""

# what the affected users give each place now (+) minus what they gave before (-), grouped the same way
PLACE_VECTORS_NOW_BATCH = f"""
CREATE TEMP TABLE place_vectors_now ON COMMIT DROP AS
SELECT d.place_category, d.place_id, NULL::float8 AS vector_weight,
       CASE WHEN w.total > {EPSILON_WEIGHT} THEN witple_scale(
           coalesce(witple_scale(p.behavior_vector, p.behavior_weight), witple_zero()) + d.delta,
           1.0 / w.total) END AS behavior_vector,
       CASE WHEN w.total > {EPSILON_WEIGHT} THEN w.total ELSE 0 END AS behavior_weight
FROM (
    SELECT g.place_category, g.place_id, witple_scale(avg(witple_scale(g.mean, g.signed_weight)), count(*)) AS delta,
           sum(g.signed_weight) AS delta_weight
    FROM (
        SELECT i.place_category, i.place_id, r.sign * r.w * count(*) AS signed_weight, avg(r.v) AS mean
        FROM affected a
        JOIN user_place_interactions i USING (user_id)
        LEFT JOIN batch_pairs b USING (user_id, place_category, place_id)
        LEFT JOIN user_vectors_now n USING (user_id)
        LEFT JOIN old_means o USING (user_id)
        CROSS JOIN LATERAL (
            SELECT {_w("i")} AS w_new,
                   {_w("i")} - coalesce((b.clicks * %(wc)s + b.likes * %(wl)s + b.bookmarks * %(wb)s)::float8, 0)
                     AS w_old
        ) x
        CROSS JOIN LATERAL (VALUES (1, x.w_new, n.vector), (-1, x.w_old, o.vector)) AS r(sign, w, v)
        WHERE r.v IS NOT NULL AND r.w > 0
        GROUP BY i.place_category, i.place_id, r.sign, r.w
    ) g
    GROUP BY g.place_category, g.place_id
) d
LEFT JOIN place_vectors p USING (place_category, place_id)
CROSS JOIN LATERAL (SELECT coalesce(p.behavior_weight, 0) + d.delta_weight AS total) w
"""

PLACE_VECTORS_NOW_ALL = f"""
CREATE TEMP TABLE place_vectors_now ON COMMIT DROP AS
SELECT k.place_category, k.place_id, coalesce(a.weight, 0) AS vector_weight, s.vector AS behavior_vector,
       coalesce(s.weight, 0) AS behavior_weight
FROM (
    SELECT place_category, place_id FROM user_place_interactions
    UNION SELECT place_category, place_id FROM batch_places
    UNION SELECT place_category, place_id FROM place_vectors WHERE behavior_weight > 0
) k
LEFT JOIN (
    SELECT place_category, place_id, sum({_w("i")}) AS weight FROM user_place_interactions i GROUP BY 1, 2
) a USING (place_category, place_id)
LEFT JOIN (
    SELECT g.place_category, g.place_id,
           witple_scale(avg(witple_scale(g.mean, g.w * g.n)), count(*) / sum(g.w * g.n)) AS vector,
           sum(g.w * g.n) AS weight
    FROM (
        SELECT i.place_category, i.place_id, {_w("i")} AS w, count(*) AS n, avg(n.vector) AS mean
        FROM user_place_interactions i JOIN user_vectors_now n USING (user_id)
        WHERE n.vector IS NOT NULL AND {_w("i")} > 0
        GROUP BY i.place_category, i.place_id, {_w("i")}
    ) g
    GROUP BY g.place_category, g.place_id
) s USING (place_category, place_id)
"""


def space_of(content_model: str, text_version: str, weights: dict[str, float]) -> dict[str, Any]:
    """The query parameters that say which vectors count and how actions weigh."""
    return {
        "model": content_model,
        "text_version": text_version,
        "wc": weights["click"],
        "wl": weights["like"],
        "wb": weights["bookmark"],
    }


def stored_space(conn: psycopg.Connection) -> dict[str, Any] | None:
    row = conn.execute("SELECT content_model, place_text_version, action_weights FROM vector_space").fetchone()
    return None if row is None else {"model": row[0], "text_version": row[1], "weights": row[2]}


def _weights(space: dict[str, Any]) -> dict[str, float]:
    return {"click": space["wc"], "like": space["wl"], "bookmark": space["wb"]}


def _same_space(stored: dict[str, Any] | None, space: dict[str, Any]) -> bool:
    if stored is None:
        return False
    return (stored["model"], stored["text_version"], stored["weights"]) == (
        space["model"],
        space["text_version"],
        _weights(space),
    )


def record_space(conn: psycopg.Connection, space: dict[str, Any]) -> None:
    conn.execute(
        "INSERT INTO vector_space (id, content_model, place_text_version, action_weights) VALUES (true, %s, %s, %s)"
        " ON CONFLICT (id) DO UPDATE SET content_model = EXCLUDED.content_model,"
        " place_text_version = EXCLUDED.place_text_version, action_weights = EXCLUDED.action_weights,"
        " updated_at = now()",
        (space["model"], space["text_version"], orjson.dumps(_weights(space)).decode()),
    )


def compute(conn: psycopg.Connection, space: dict[str, Any], *, everything: bool = False) -> dict[str, Any]:
    """New values for the users and places this batch changes (all of them when the space changed).

    Needs batch_pairs, batch_places, changed_content and the interactions upserted.
    """
    if not everything and not _same_space(stored_space(conn), space):
        event(log, "vector space changed (model, place text version or weights): recomputing every vector")
        everything = True
    if everything:
        statements = [AFFECTED_ALL, USER_VECTORS_NOW, PLACE_VECTORS_NOW_ALL]
    else:
        statements = [AFFECTED_BATCH, OLD_MEANS, USER_VECTORS_NOW, PLACE_VECTORS_NOW_BATCH]
    for statement in statements:
        conn.execute(statement, space)  # type: ignore[arg-type]
    row = conn.execute(
        "SELECT (SELECT count(*) FROM user_vectors_now), (SELECT count(vector) FROM user_vectors_now),"
        " (SELECT count(*) FROM place_vectors_now)"
    ).fetchone()
    return {
        "mode": "everything" if everything else "batch",
        "users_recomputed": int(row[0]),  # type: ignore[index]
        "users_with_vectors": int(row[1]),  # type: ignore[index]
        "places_recomputed": int(row[2]),  # type: ignore[index]
    }
