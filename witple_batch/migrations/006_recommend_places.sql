-- recommend_places(user, k): the ranking chosen by benchmarks/quality.py on MovieLens 100K
-- (parameters picked on validation, reported on test, against most-popular, item-kNN and every
-- ranking of our vectors alone tried there).
--
-- The user's taste is read from its `p_recent` most recent places q. A place p scores
--   neighbours: sum over q of together(q, p) / sqrt(users(q) * users(p)), scaled so the best
--               unseen place has 1 (item-kNN: places acted on by the same other users),
--   + p_taste * the cosine of p's behaviour vector to the user's profile (the sum of its recent
--               places' behaviour vectors, weighted by its actions on them: who liked what,
--               and the places' text, so it ranks places no neighbour has reached yet); both
--               centred first (the mean unit behaviour vector taken out: behaviour vectors
--               share one large direction, cosine 0.98 on average on MovieLens, that says
--               nothing about a taste),
--   + p_popularity * ln(1 + users(p)) / ln(2 + the most users of any place).
-- Places the user already acted on are left out; a user with no history gets the most popular.
--
-- Cost per call: together() is counted over at most `p_neighbours` other users per recent place
-- (the first by user_id) and `p_neighbour_places` places per such user (the first by key), index
-- scans with LIMIT, so at most p_recent * p_neighbours * p_neighbour_places rows whatever the
-- history; and three scans of place_vectors (the mean, the largest popularity, the scores), so
-- linear in the number of places. Rows adopted from the main server's tables (behavior_weight
-- 0: vectors made by another system) count in no taste; their popularity counts.
DROP FUNCTION IF EXISTS recommend_places(text, integer, integer, double precision);  -- the first signature
CREATE OR REPLACE FUNCTION recommend_places(
    p_user_id text,
    k integer,
    p_recent integer DEFAULT 5,
    p_taste double precision DEFAULT 0.25,
    p_popularity double precision DEFAULT 0.02,
    p_neighbours integer DEFAULT 500,
    p_neighbour_places integer DEFAULT 1000
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
), neighbours AS (
    SELECT r.place_category AS q_category, r.place_id AS q_id, n.user_id
    FROM recent r CROSS JOIN LATERAL (
        SELECT i.user_id FROM user_place_interactions i
        WHERE i.place_category = r.place_category AND i.place_id = r.place_id AND i.user_id <> p_user_id
        ORDER BY i.user_id
        LIMIT p_neighbours
    ) n
), together AS (
    SELECT n.q_category, n.q_id, t.place_category, t.place_id, count(*)::float8 AS users
    FROM neighbours n CROSS JOIN LATERAL (
        SELECT i.place_category, i.place_id FROM user_place_interactions i
        WHERE i.user_id = n.user_id
        ORDER BY i.place_category, i.place_id
        LIMIT p_neighbour_places
    ) t
    GROUP BY 1, 2, 3, 4
), knn AS (
    SELECT t.place_category, t.place_id, sum(t.users / sqrt(q.unique_users::float8 * p.unique_users)) AS s
    FROM together t
    JOIN place_vectors q ON q.place_category = t.q_category AND q.place_id = t.q_id
    JOIN place_vectors p ON p.place_category = t.place_category AND p.place_id = t.place_id
    WHERE q.unique_users > 0 AND p.unique_users > 0
      AND NOT EXISTS (
          SELECT 1 FROM user_place_interactions i
          WHERE i.user_id = p_user_id AND i.place_category = t.place_category AND i.place_id = t.place_id
      )
    GROUP BY 1, 2
), best AS (
    SELECT max(s) AS top FROM knn
), centre AS (
    SELECT avg(l2_normalize(behavior_vector)) AS mean FROM place_vectors
    WHERE behavior_vector IS NOT NULL AND behavior_weight > 0
), profile AS (
    SELECT sum(witple_scale(l2_normalize(l2_normalize(p.behavior_vector) - c.mean), r.weight)) AS taste
    FROM recent r JOIN place_vectors p USING (place_category, place_id) CROSS JOIN centre c
    WHERE p.behavior_vector IS NOT NULL AND p.behavior_weight > 0 AND r.weight > 0
), reach AS (
    SELECT ln(2 + coalesce(max(unique_users), 0)) AS top FROM place_vectors
), scored AS (
    SELECT p.place_category::text AS place_category, p.place_id::text AS place_id,
           coalesce(knn.s / nullif(best.top, 0), 0)
           -- NaN: a zero vector (a place alone, or no profile) adds no taste
           + p_taste * CASE WHEN p.behavior_weight > 0 THEN
                 coalesce(1 - nullif((l2_normalize(p.behavior_vector) - centre.mean) <=> profile.taste, 'NaN'), 0)
             ELSE 0 END
           + p_popularity * ln(1 + greatest(p.unique_users, 0)) / reach.top AS score
    FROM place_vectors p
    CROSS JOIN centre CROSS JOIN profile CROSS JOIN reach CROSS JOIN best
    LEFT JOIN knn ON knn.place_category = p.place_category AND knn.place_id = p.place_id
    WHERE NOT EXISTS (
        SELECT 1 FROM user_place_interactions i
        WHERE i.user_id = p_user_id AND i.place_category = p.place_category AND i.place_id = p.place_id
    )
)
SELECT s.place_category, s.place_id, s.score FROM scored s
ORDER BY s.score DESC, s.place_category, s.place_id
LIMIT k
$$;

-- the neighbours of a place in user_id order, straight from the index (user_id never changes, so
-- updates of a pair stay HOT); it serves every lookup the (place_category, place_id) index did
CREATE INDEX IF NOT EXISTS user_place_interactions_place_user
    ON user_place_interactions (place_category, place_id, user_id);
DROP INDEX IF EXISTS user_place_interactions_place;
