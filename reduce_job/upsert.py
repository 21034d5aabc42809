"""INSERT ... SELECT ... ON CONFLICT merges from the staging tables into the real ones.

Each statement reads the old row with a LEFT JOIN and writes the merged row; that is exact
because every reduce holds REDUCE_LOCK for its whole transaction (reducers are the only
writers). Vectors merge as weighted means, v = (v_old * w_old + v_new * w_new) / (w_old + w_new);
pgvector has no scalar product, so a scalar becomes array_fill(s, '{384}')::vector.
A place keeps its stored content vector while the model and place text that made it are
the batch's; otherwise the batch's vector replaces it.
"""

from __future__ import annotations

import psycopg

EPOCH = "timestamptz '1970-01-01 00:00:00+00' + interval '1 microsecond' *"


def _scalar(expr: str) -> str:
    return f"array_fill(({expr})::real, '{{384}}')::vector"


def _weighted_mean(old: str, old_w: str, new: str, new_w: str) -> str:
    total = f"({old_w} + {new_w})"
    return (
        f"CASE WHEN {new} IS NULL THEN {old} WHEN {old} IS NULL OR {old_w} <= 0 THEN {new} "
        f"ELSE {old} * {_scalar(f'{old_w} / {total}')} + {new} * {_scalar(f'{new_w} / {total}')} END"
    )


def _score(part: str, total: str) -> str:
    return f"coalesce(100.0 * {part} / nullif({total}, 0), 0)"


INTERACTIONS = f"""
INSERT INTO user_place_interactions AS t
    (user_id, place_category, place_id, clicks, likes, bookmarks, other_actions, vector_weight,
     first_action_at, last_action_at, updated_at)
SELECT user_id, place_category, place_id, clicks, likes, bookmarks, other, weight,
       {EPOCH} first_us, {EPOCH} last_us, now()
FROM stage_pairs
ON CONFLICT (user_id, place_category, place_id) DO UPDATE SET
    clicks = t.clicks + EXCLUDED.clicks,
    likes = t.likes + EXCLUDED.likes,
    bookmarks = t.bookmarks + EXCLUDED.bookmarks,
    other_actions = t.other_actions + EXCLUDED.other_actions,
    vector_weight = t.vector_weight + EXCLUDED.vector_weight,
    first_action_at = least(t.first_action_at, EXCLUDED.first_action_at),
    last_action_at = greatest(t.last_action_at, EXCLUDED.last_action_at),
    updated_at = now()
"""

USERS = f"""
INSERT INTO user_behavior_vectors AS t
    (user_id, behavior_vector, vector_weight, total_clicks, total_likes, total_bookmarks, total_other,
     total_actions, click_score, like_score, bookmark_score, first_action_date, last_action_date, vector_updated_at)
SELECT m.user_id, m.vector, m.weight, m.clicks, m.likes, m.bookmarks, m.other, m.total,
       {_score("m.clicks", "m.total")}, {_score("m.likes", "m.total")}, {_score("m.bookmarks", "m.total")},
       m.first_at, m.last_at, CASE WHEN m.touched_vector THEN now() ELSE m.old_vector_at END
FROM (
    SELECT s.user_id,
           {_weighted_mean("o.behavior_vector", "o.vector_weight", "s.vector", "s.weight")} AS vector,
           coalesce(o.vector_weight, 0) + s.weight AS weight,
           coalesce(o.total_clicks, 0) + s.clicks AS clicks,
           coalesce(o.total_likes, 0) + s.likes AS likes,
           coalesce(o.total_bookmarks, 0) + s.bookmarks AS bookmarks,
           coalesce(o.total_other, 0) + s.other AS other,
           coalesce(o.total_actions, 0) + s.clicks + s.likes + s.bookmarks + s.other AS total,
           least(o.first_action_date, {EPOCH} s.first_us) AS first_at,
           greatest(o.last_action_date, {EPOCH} s.last_us) AS last_at,
           s.vector IS NOT NULL AS touched_vector,
           o.vector_updated_at AS old_vector_at
    FROM stage_users s LEFT JOIN user_behavior_vectors o ON o.user_id = s.user_id
) m
ON CONFLICT (user_id) DO UPDATE SET
    behavior_vector = EXCLUDED.behavior_vector,
    vector_weight = EXCLUDED.vector_weight,
    total_clicks = EXCLUDED.total_clicks,
    total_likes = EXCLUDED.total_likes,
    total_bookmarks = EXCLUDED.total_bookmarks,
    total_other = EXCLUDED.total_other,
    total_actions = EXCLUDED.total_actions,
    click_score = EXCLUDED.click_score,
    like_score = EXCLUDED.like_score,
    bookmark_score = EXCLUDED.bookmark_score,
    first_action_date = EXCLUDED.first_action_date,
    last_action_date = EXCLUDED.last_action_date,
    vector_updated_at = EXCLUDED.vector_updated_at
"""

PLACES = f"""
INSERT INTO place_vectors AS t
    (place_category, place_id, content_vector, behavior_vector, combined_vector, behavior_weight, place_text_version,
     content_model, total_clicks, total_likes, total_bookmarks, total_other, total_actions, vector_weight, unique_users,
     popularity_score, engagement_score, first_action_date, last_action_date, vector_updated_at, stats_updated_at)
SELECT m.place_category, m.place_id, m.content, m.behavior,
       CASE WHEN m.behavior IS NULL THEN m.content ELSE l2_normalize(m.content + m.behavior) END,
       m.behavior_weight, %(text_version)s, %(content_model)s, m.clicks, m.likes, m.bookmarks, m.other,
       m.clicks + m.likes + m.bookmarks + m.other, m.weight,
       (SELECT count(*) FROM user_place_interactions i
         WHERE i.place_category = m.place_category AND i.place_id = m.place_id),
       least(2 * (m.likes + m.bookmarks + m.clicks), 100), least(5 * (m.likes + m.bookmarks), 100),
       m.first_at, m.last_at, now(), now()
FROM (
    SELECT s.place_category, s.place_id,
           CASE WHEN o.content_vector IS NULL OR o.place_text_version IS DISTINCT FROM %(text_version)s
                     OR o.content_model IS DISTINCT FROM %(content_model)s
                THEN s.content ELSE o.content_vector END AS content,
           {_weighted_mean("o.behavior_vector", "o.behavior_weight", "s.behavior", "s.behavior_weight")} AS behavior,
           coalesce(o.behavior_weight, 0) + s.behavior_weight AS behavior_weight,
           coalesce(o.total_clicks, 0) + s.clicks AS clicks,
           coalesce(o.total_likes, 0) + s.likes AS likes,
           coalesce(o.total_bookmarks, 0) + s.bookmarks AS bookmarks,
           coalesce(o.total_other, 0) + s.other AS other,
           coalesce(o.vector_weight, 0) + s.weight AS weight,
           least(o.first_action_date, {EPOCH} s.first_us) AS first_at,
           greatest(o.last_action_date, {EPOCH} s.last_us) AS last_at
    FROM stage_places s LEFT JOIN place_vectors o ON o.place_category = s.place_category AND o.place_id = s.place_id
) m
ON CONFLICT (place_id, place_category) DO UPDATE SET
    content_vector = EXCLUDED.content_vector,
    behavior_vector = EXCLUDED.behavior_vector,
    combined_vector = EXCLUDED.combined_vector,
    behavior_weight = EXCLUDED.behavior_weight,
    place_text_version = EXCLUDED.place_text_version,
    content_model = EXCLUDED.content_model,
    total_clicks = EXCLUDED.total_clicks,
    total_likes = EXCLUDED.total_likes,
    total_bookmarks = EXCLUDED.total_bookmarks,
    total_other = EXCLUDED.total_other,
    total_actions = EXCLUDED.total_actions,
    vector_weight = EXCLUDED.vector_weight,
    unique_users = EXCLUDED.unique_users,
    popularity_score = EXCLUDED.popularity_score,
    engagement_score = EXCLUDED.engagement_score,
    first_action_date = EXCLUDED.first_action_date,
    last_action_date = EXCLUDED.last_action_date,
    vector_updated_at = EXCLUDED.vector_updated_at,
    stats_updated_at = EXCLUDED.stats_updated_at
"""


def upsert(conn: psycopg.Connection, content_model: str | None, text_version: str | None) -> dict[str, int]:
    """Interactions first: place unique_users counts them."""
    origin = {"content_model": content_model, "text_version": text_version}
    return {
        "interactions": conn.execute(INTERACTIONS).rowcount,  # type: ignore[arg-type]
        "users": conn.execute(USERS).rowcount,  # type: ignore[arg-type]
        "places": conn.execute(PLACES, origin).rowcount,  # type: ignore[arg-type]
    }
