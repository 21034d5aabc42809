-- recommend_places(user, k): the ranking that won benchmarks/quality_bench.py on MovieLens 100K
-- (HR@10 against most-popular, item-kNN and every other ranking of our vectors tried there).
--
-- The user's taste is read from its `p_recent` most recent places: the sum of their behaviour
-- vectors (each a place's users' mean taste, so it carries who-liked-what as well as the
-- places' text), weighted by the user's actions on them. A place scores its cosine to that
-- profile plus `p_popularity` times its popularity (log of distinct users, scaled to 0..1).
-- Places the user already acted on are left out; a user with no history gets the most popular.
CREATE OR REPLACE FUNCTION recommend_places(
    p_user_id text,
    k integer,
    p_recent integer DEFAULT 8,
    p_popularity double precision DEFAULT 0.02
) RETURNS TABLE (place_category text, place_id text, score double precision)
LANGUAGE sql STABLE AS $$
WITH weights AS (
    SELECT coalesce((action_weights ->> 'click')::float8, 1) AS wc,
           coalesce((action_weights ->> 'like')::float8, 3) AS wl,
           coalesce((action_weights ->> 'bookmark')::float8, 5) AS wb
    FROM (SELECT (SELECT action_weights FROM vector_space) AS action_weights) s
), recent AS (
    SELECT i.place_category, i.place_id, i.clicks * w.wc + i.likes * w.wl + i.bookmarks * w.wb AS weight
    FROM user_place_interactions i, weights w
    WHERE i.user_id = p_user_id
    ORDER BY i.last_action_at DESC NULLS LAST, i.place_category DESC, i.place_id DESC
    LIMIT p_recent
), profile AS (
    SELECT sum(witple_scale(l2_normalize(p.behavior_vector), r.weight)) AS taste
    FROM recent r JOIN place_vectors p USING (place_category, place_id)
    WHERE p.behavior_vector IS NOT NULL AND r.weight > 0
), reach AS (
    SELECT ln(2 + coalesce(max(unique_users), 0)) AS top FROM place_vectors
)
SELECT p.place_category::text, p.place_id::text,
       coalesce(1 - (p.behavior_vector <=> profile.taste), 0) + p_popularity * ln(1 + p.unique_users) / reach.top
FROM place_vectors p, profile, reach
WHERE NOT EXISTS (
    SELECT 1 FROM user_place_interactions i
    WHERE i.user_id = p_user_id AND i.place_category = p.place_category AND i.place_id = p.place_id
)
ORDER BY 3 DESC, 1, 2
LIMIT k
$$;
