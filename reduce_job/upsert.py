"""The batch into the real tables: interactions first, then every touched user and place written once.

Shard rows are summed per (user, place) first (BATCH_TABLES). Every total adds this batch's
sums to the stored ones (exact: each reduce holds REDUCE_LOCK for its transaction, so reducers
are the only writers and never interleave); unique_users grows by the pairs this batch creates,
never by recounting a place's history. Users and places are then written by one statement
each, with their new vectors (vectors.compute) in the same row update: one new tuple per row
per batch. A place's content vector is replaced only when the model, place text version or
text differs from the stored one; otherwise the row keeps its value (and its TOAST pointer),
so the update can be HOT and leave the HNSW index alone.
"""

from __future__ import annotations

import psycopg

from witple_batch.vector_space import VectorSpace

EPOCH = "timestamptz '1970-01-01 00:00:00+00' + interval '1 microsecond' *"
NULL_TIME = "(-9223372036854775807 - 1)"  # shard_job.aggregate.NULL_TIME: "no parseable time"

BATCH_TABLES = [
    f"""
CREATE TEMP TABLE batch_pairs ON COMMIT DROP AS
SELECT u.user_id, k.place_category, k.place_id,
       sum(p.clicks)::bigint AS clicks, sum(p.likes)::bigint AS likes,
       sum(p.bookmarks)::bigint AS bookmarks, sum(p.other)::bigint AS other,
       {EPOCH} min(nullif(p.first_us, {NULL_TIME})) AS first_at,
       {EPOCH} max(nullif(p.last_us, {NULL_TIME})) AS last_at
FROM stage_pairs p
JOIN stage_user_keys u ON u.shard = p.shard AND u.idx = p.user_idx
JOIN stage_place_keys k ON k.shard = p.shard AND k.idx = p.place_idx
GROUP BY u.user_id, k.place_category, k.place_id
""",
    "CREATE UNIQUE INDEX ON batch_pairs (user_id, place_category, place_id)",
    """
CREATE TEMP TABLE batch_places ON COMMIT DROP AS
SELECT DISTINCT ON (k.place_category, k.place_id) k.place_category, k.place_id, c.content, c.text_sha256,
       nullif(c.catalogue_sha256, decode(repeat('00', 32), 'hex')) AS catalogue_sha256  -- NULL: not catalogued
FROM stage_place_keys k JOIN stage_place_content c USING (shard, idx)
ORDER BY k.place_category, k.place_id, k.shard
""",
    "CREATE UNIQUE INDEX ON batch_places (place_category, place_id)",
    "ANALYZE batch_pairs",
    "ANALYZE batch_places",
]

# the order a user's pairs came in, within a run and for rows from before migration 020 (neighbours.py)
ARRIVAL_ORDER = "first_action_at NULLS FIRST, place_category, place_id"

# the rows of the batch's users from before migration 020, numbered below 1 in the order they came,
# once per user, before its new pairs are numbered after them
POSITIONS = f"""
UPDATE user_place_interactions i SET position = r.position
FROM (
    SELECT user_id, place_category, place_id,
           row_number() OVER w - count(*) OVER (PARTITION BY user_id) - 1 AS position
    FROM user_place_interactions
    WHERE user_id IN (SELECT DISTINCT user_id FROM batch_pairs) AND position IS NULL
    WINDOW w AS (PARTITION BY user_id ORDER BY {ARRIVAL_ORDER})
) r
WHERE (i.user_id, i.place_category, i.place_id) = (r.user_id, r.place_category, r.place_id)
"""

INTERACTIONS = """
CREATE TEMP TABLE created_pairs ON COMMIT DROP AS
WITH up AS (
    INSERT INTO user_place_interactions AS t
        (user_id, place_category, place_id, clicks, likes, bookmarks, other_actions,
         first_action_at, last_action_at, updated_at, position)
    SELECT b.user_id, b.place_category, b.place_id, b.clicks, b.likes, b.bookmarks, b.other, b.first_at, b.last_at,
           now(),  -- a new pair comes after every pair its user had (neighbours.py); a known one keeps its place
           greatest(u.last, 0) + row_number() OVER (
               PARTITION BY b.user_id ORDER BY b.first_at NULLS FIRST, b.place_category, b.place_id
           )
    FROM batch_pairs b
    JOIN (
        SELECT d.user_id, (SELECT max(position) FROM user_place_interactions i WHERE i.user_id = d.user_id) AS last
        FROM (SELECT DISTINCT user_id FROM batch_pairs) d
    ) u USING (user_id)
    ON CONFLICT (user_id, place_category, place_id) DO UPDATE SET
        clicks = t.clicks + EXCLUDED.clicks,
        likes = t.likes + EXCLUDED.likes,
        bookmarks = t.bookmarks + EXCLUDED.bookmarks,
        other_actions = t.other_actions + EXCLUDED.other_actions,
        first_action_at = least(t.first_action_at, EXCLUDED.first_action_at),
        last_action_at = greatest(t.last_action_at, EXCLUDED.last_action_at),
        updated_at = now()
    RETURNING user_id, place_category, place_id, xmax = 0 AS inserted
)
SELECT user_id, place_category, place_id FROM up WHERE inserted
"""
# the batch's places and the users each gained
NEW_PAIRS = """
CREATE TEMP TABLE new_pairs ON COMMIT DROP AS
SELECT place_category, place_id, count(*) AS new_users FROM created_pairs GROUP BY 1, 2
"""

# the batch's places whose stored content was made by another model, text version or text
# a stored place row `p` whose content vector is not the one of text `b.text_sha256` in this space
# (model, place text version): the batch writes it a new one
CONTENT_DIFFERS = """(p.content_vector IS NULL OR p.content_model IS DISTINCT FROM %(model)s
   OR p.place_text_version IS DISTINCT FROM %(text_version)s OR p.content_text_sha256 IS DISTINCT FROM b.text_sha256)"""

CHANGED_CONTENT = f"""
CREATE TEMP TABLE changed_content ON COMMIT DROP AS
SELECT b.place_category, b.place_id FROM batch_places b
JOIN place_vectors p USING (place_category, place_id)
WHERE {CONTENT_DIFFERS}
"""


def _score(part: str, total: str) -> str:
    return f"coalesce(100.0 * ({part}) / nullif({total}, 0), 0)"


_TOTAL = "coalesce(t.total_actions, 0) + EXCLUDED.total_actions"

USERS = f"""
INSERT INTO user_behavior_vectors AS t
    (user_id, total_clicks, total_likes, total_bookmarks, total_other, total_actions,
     click_score, like_score, bookmark_score, first_action_date, last_action_date,
     behavior_vector, vector_weight, vector_updated_at)
SELECT user_id, coalesce(s.clicks, 0), coalesce(s.likes, 0), coalesce(s.bookmarks, 0), coalesce(s.other, 0),
       coalesce(s.total, 0), {_score("s.clicks", "s.total")}, {_score("s.likes", "s.total")},
       {_score("s.bookmarks", "s.total")}, s.first_at, s.last_at,
       n.vector, coalesce(n.weight, 0), CASE WHEN n.user_id IS NOT NULL THEN now() END
FROM (SELECT *, clicks + likes + bookmarks + other AS total FROM user_sums) s  -- held users have none
FULL JOIN user_vectors_now n USING (user_id)
WHERE s.user_id IS NOT NULL OR EXISTS (SELECT 1 FROM user_behavior_vectors r WHERE r.user_id = n.user_id)
ON CONFLICT (user_id) DO UPDATE SET
    total_clicks = coalesce(t.total_clicks, 0) + EXCLUDED.total_clicks,
    total_likes = coalesce(t.total_likes, 0) + EXCLUDED.total_likes,
    total_bookmarks = coalesce(t.total_bookmarks, 0) + EXCLUDED.total_bookmarks,
    total_other = coalesce(t.total_other, 0) + EXCLUDED.total_other,
    total_actions = coalesce(t.total_actions, 0) + EXCLUDED.total_actions,
    click_score = {_score("coalesce(t.total_clicks, 0) + EXCLUDED.total_clicks", _TOTAL)},
    like_score = {_score("coalesce(t.total_likes, 0) + EXCLUDED.total_likes", _TOTAL)},
    bookmark_score = {_score("coalesce(t.total_bookmarks, 0) + EXCLUDED.total_bookmarks", _TOTAL)},
    first_action_date = least(t.first_action_date, EXCLUDED.first_action_date),
    last_action_date = greatest(t.last_action_date, EXCLUDED.last_action_date),
    behavior_vector = CASE WHEN EXCLUDED.vector_updated_at IS NULL THEN t.behavior_vector
                           ELSE EXCLUDED.behavior_vector END,
    vector_weight = CASE WHEN EXCLUDED.vector_updated_at IS NULL THEN t.vector_weight ELSE EXCLUDED.vector_weight END,
    vector_updated_at = coalesce(EXCLUDED.vector_updated_at, t.vector_updated_at)
"""

# every affected user's running sums (vectors.py): a user recomputed in full starts again, its places
# holding its new vector; a summed user's places keep holding what they held, its vector before
# this run, until a consolidation (consolidate.py)
SUMS = [
    "DELETE FROM user_content_sums s USING affected a WHERE s.user_id = a.user_id AND NOT a.summed",
    """
INSERT INTO user_content_sums AS t (user_id, content_sum, weight, placed_vector)
SELECT a.user_id, m.content_sum, m.weight, CASE WHEN a.summed THEN o.vector END
FROM affected a JOIN user_means m USING (idx) LEFT JOIN old_means o USING (idx)
WHERE a.gets_row
ON CONFLICT (user_id) DO UPDATE SET
    content_sum = EXCLUDED.content_sum, weight = EXCLUDED.weight, placed_vector = EXCLUDED.placed_vector
""",
]

PLACES = """
INSERT INTO place_vectors AS t
    (place_category, place_id, content_vector, content_text_sha256, content_model, place_text_version, catalogue_sha256,
     total_clicks, total_likes, total_bookmarks, total_other, total_actions, vector_weight, unique_users,
     popularity_score, engagement_score, first_action_date, last_action_date,
     behavior_vector, behavior_weight, combined_vector, stats_updated_at, vector_updated_at)
SELECT k.place_category, k.place_id,
       CASE WHEN x.content_changed THEN b.content END,  -- NULL: keep the stored value (and its TOAST pointer)
       b.text_sha256, CASE WHEN b.place_id IS NOT NULL THEN %(model)s END,
       CASE WHEN b.place_id IS NOT NULL THEN %(text_version)s END, b.catalogue_sha256,
       coalesce(s.clicks, 0), coalesce(s.likes, 0), coalesce(s.bookmarks, 0), coalesce(s.other, 0),
       coalesce(s.clicks + s.likes + s.bookmarks + s.other, 0), {vector_weight}, coalesce(n.new_users, 0),
       least(2 * coalesce(s.likes + s.bookmarks + s.clicks, 0), 100),
       least(5 * coalesce(s.likes + s.bookmarks, 0), 100),
       s.first_at, s.last_at, y.behavior, y.behavior_weight,
       CASE WHEN NOT y.content_in_space THEN NULL  -- content of another model: never blended
            WHEN y.behavior IS NULL THEN y.content ELSE l2_normalize(y.content + y.behavior) END,
       CASE WHEN s.place_id IS NOT NULL THEN now() END, now()
FROM (SELECT place_category, place_id FROM batch_places UNION SELECT place_category, place_id FROM place_vectors_now) k
LEFT JOIN batch_places b USING (place_category, place_id)
LEFT JOIN (
    SELECT place_category, place_id, sum(clicks) AS clicks, sum(likes) AS likes, sum(bookmarks) AS bookmarks,
           sum(other) AS other, sum(clicks * %(w_click)s + likes * %(w_like)s + bookmarks * %(w_bookmark)s) AS weight,
           min(first_at) AS first_at, max(last_at) AS last_at
    FROM batch_pairs GROUP BY place_category, place_id
) s USING (place_category, place_id)
LEFT JOIN new_pairs n USING (place_category, place_id)
LEFT JOIN place_vectors_now v USING (place_category, place_id)
LEFT JOIN place_vectors p USING (place_category, place_id)
CROSS JOIN LATERAL (
    SELECT b.place_id IS NOT NULL AND (p.place_id IS NULL OR EXISTS (
               SELECT 1 FROM changed_content c WHERE c.place_category = k.place_category AND c.place_id = k.place_id
           )) AS content_changed
) x
CROSS JOIN LATERAL (
    SELECT coalesce(b.content, p.content_vector) AS content,
           coalesce(b.place_id IS NOT NULL
                    OR (p.content_model = %(model)s AND p.place_text_version = %(text_version)s), false)
             AS content_in_space,  -- a legacy row's NULL model is another space, not "unknown"
           CASE WHEN v.place_id IS NOT NULL THEN v.behavior_vector ELSE p.behavior_vector END AS behavior,
           CASE WHEN v.place_id IS NOT NULL THEN v.behavior_weight ELSE coalesce(p.behavior_weight, 0) END
             AS behavior_weight
) y
ON CONFLICT (place_id, place_category) DO UPDATE SET
    content_vector = coalesce(EXCLUDED.content_vector, t.content_vector),
    content_text_sha256 = coalesce(EXCLUDED.content_text_sha256, t.content_text_sha256),
    content_model = coalesce(EXCLUDED.content_model, t.content_model),
    catalogue_sha256 = CASE WHEN EXCLUDED.content_model IS NOT NULL THEN EXCLUDED.catalogue_sha256  -- the run read it
                            ELSE t.catalogue_sha256 END,
    place_text_version = coalesce(EXCLUDED.place_text_version, t.place_text_version),
    total_clicks = coalesce(t.total_clicks, 0) + EXCLUDED.total_clicks,
    total_likes = coalesce(t.total_likes, 0) + EXCLUDED.total_likes,
    total_bookmarks = coalesce(t.total_bookmarks, 0) + EXCLUDED.total_bookmarks,
    total_other = coalesce(t.total_other, 0) + EXCLUDED.total_other,
    total_actions = coalesce(t.total_actions, 0) + EXCLUDED.total_actions,
    vector_weight = {vector_weight_update},
    unique_users = coalesce(t.unique_users, 0) + EXCLUDED.unique_users,
    popularity_score = least(2 * (coalesce(t.total_likes, 0) + coalesce(t.total_bookmarks, 0)
                                  + coalesce(t.total_clicks, 0)
                                  + EXCLUDED.total_likes + EXCLUDED.total_bookmarks + EXCLUDED.total_clicks), 100),
    engagement_score = least(5 * (coalesce(t.total_likes, 0) + coalesce(t.total_bookmarks, 0)
                                  + EXCLUDED.total_likes + EXCLUDED.total_bookmarks), 100),
    first_action_date = least(t.first_action_date, EXCLUDED.first_action_date),
    last_action_date = greatest(t.last_action_date, EXCLUDED.last_action_date),
    behavior_vector = EXCLUDED.behavior_vector,
    behavior_weight = EXCLUDED.behavior_weight,
    combined_vector = EXCLUDED.combined_vector,
    stats_updated_at = coalesce(EXCLUDED.stats_updated_at, t.stats_updated_at),
    vector_updated_at = EXCLUDED.vector_updated_at
"""


def batch_tables(conn: psycopg.Connection) -> dict[str, int]:
    """Shard rows summed per (user, place), one content row per place; returns the batch's counts."""
    for statement in BATCH_TABLES:
        conn.execute(statement)  # type: ignore[arg-type]
    row = conn.execute(
        # DISTINCT in a subquery may hash; count(DISTINCT) always sorts
        "SELECT (SELECT count(*) FROM (SELECT DISTINCT user_id FROM batch_pairs) d),"
        " (SELECT count(*) FROM batch_places), (SELECT count(*) FROM batch_pairs),"
        " (SELECT count(*) FROM batch_places WHERE catalogue_sha256 IS NULL)"
    ).fetchone()
    users, places, pairs, uncatalogued = row  # type: ignore[misc]
    return {"users": int(users), "places": int(places), "pairs": int(pairs), "places_uncatalogued": int(uncatalogued)}


def interactions(conn: psycopg.Connection, space: VectorSpace) -> int:
    """Add the batch's pairs; note which pairs are new and which places' content changed. Returns new pairs."""
    conn.execute(POSITIONS)  # type: ignore[arg-type]
    conn.execute(INTERACTIONS)  # type: ignore[arg-type]
    conn.execute(NEW_PAIRS)  # type: ignore[arg-type]
    conn.execute(CHANGED_CONTENT, space.sql_params())  # type: ignore[arg-type]
    return int(conn.execute("SELECT coalesce(sum(new_users), 0) FROM new_pairs").fetchone()[0])  # type: ignore[index]


def write(conn: psycopg.Connection, space: VectorSpace, *, everything: bool) -> dict[str, int]:
    """Every touched user and place, once, with the new vectors of vectors.compute."""
    users = conn.execute(USERS, space.sql_params()).rowcount  # type: ignore[arg-type]
    for statement in SUMS:
        conn.execute(statement)  # type: ignore[arg-type]
    return {"users_written": int(users), "places_written": places(conn, space, everything=everything)}


def places(conn: psycopg.Connection, space: VectorSpace, *, everything: bool) -> int:
    """The batch's places and place_vectors_now into place_vectors; returns the rows written."""
    if everything:  # weights may have changed: each place's weight is recounted from its interactions
        weights = {"vector_weight": "coalesce(v.vector_weight, 0)", "vector_weight_update": "EXCLUDED.vector_weight"}
    else:
        weights = {
            "vector_weight": "coalesce(s.weight, 0)",
            "vector_weight_update": "t.vector_weight + EXCLUDED.vector_weight",
        }
    return int(conn.execute(PLACES.format(**weights), space.sql_params()).rowcount)  # type: ignore[arg-type]
