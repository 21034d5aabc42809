-- recommend_places as migration 014 made it, with its new-places term bounded: the j-th best new place
-- scored p_new * 0.5^(j-1) as a numeric, which PostgreSQL refuses to turn into a double beyond j ~ 1,075
-- ("out of range for type double precision"): a catalogue with that many places no one has acted on (every
-- place, after a first sync) failed every call. Now the best 64 new places score, in double precision;
-- the 65th and beyond would add under 1e-19 of p_new. A new place this user acted on (adopted data whose
-- unique_users is still 0) no longer takes a rank either.
CREATE OR REPLACE FUNCTION recommend_places(
    p_user_id text,
    k integer,
    p_recent integer DEFAULT 5,
    p_taste double precision DEFAULT 0.25,
    p_popularity double precision DEFAULT 0.02,
    p_neighbours integer DEFAULT 500,
    p_neighbour_places integer DEFAULT 1000,
    p_new double precision DEFAULT 1.2
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
), content_centre AS (
    SELECT avg(p.content_vector) AS mean FROM place_vectors p JOIN vector_space s
        ON p.content_model = s.content_model AND p.place_text_version = s.place_text_version
    WHERE p.content_vector IS NOT NULL
), content_profile AS (
    SELECT sum(witple_scale(l2_normalize(p.content_vector - c.mean), r.weight)) AS taste
    FROM recent r JOIN place_vectors p USING (place_category, place_id) CROSS JOIN content_centre c
    JOIN vector_space s ON p.content_model = s.content_model AND p.place_text_version = s.place_text_version
    WHERE p.content_vector IS NOT NULL AND r.weight > 0
), fresh AS (
    SELECT place_category, place_id, power(0.5::float8, j - 1) AS s
    FROM (
        SELECT place_category, place_id, row_number() OVER (ORDER BY c DESC, place_category, place_id) AS j
        FROM (
            SELECT p.place_category, p.place_id, 1 - ((p.content_vector - m.mean) <=> f.taste) AS c
            FROM place_vectors p JOIN vector_space s
                ON p.content_model = s.content_model AND p.place_text_version = s.place_text_version
            CROSS JOIN content_centre m CROSS JOIN content_profile f
            WHERE p.unique_users = 0 AND p.catalogue_sha256 IS NOT NULL AND p.content_vector IS NOT NULL
              AND p_new <> 0
              AND NOT EXISTS (
                  SELECT 1 FROM user_place_interactions i
                  WHERE i.user_id = p_user_id AND i.place_category = p.place_category AND i.place_id = p.place_id
              )
        ) n
        WHERE c > 0 AND c <> 'NaN'  -- NaN: a zero vector (no profile, or a place at the mean)
    ) ranked
    WHERE j <= 64  -- 0.5^63 of p_new is below any other score's precision; 0.5^1075 is below a double's range
), reach AS (
    SELECT ln(2 + coalesce(max(unique_users), 0)) AS top FROM place_vectors
), scored AS (
    SELECT p.place_category::text AS place_category, p.place_id::text AS place_id,
           coalesce(knn.s / nullif(best.top, 0), 0)
           -- NaN: a zero vector (a place alone, or no profile) adds no taste
           + p_taste * CASE WHEN p.behavior_weight > 0 THEN
                 coalesce(1 - nullif((l2_normalize(p.behavior_vector) - centre.mean) <=> profile.taste, 'NaN'), 0)
             ELSE 0 END
           + p_new * coalesce(fresh.s, 0)
           + p_popularity * ln(1 + greatest(p.unique_users, 0)) / reach.top AS score
    FROM place_vectors p
    CROSS JOIN centre CROSS JOIN profile CROSS JOIN reach CROSS JOIN best
    LEFT JOIN knn ON knn.place_category = p.place_category AND knn.place_id = p.place_id
    LEFT JOIN fresh ON fresh.place_category = p.place_category AND fresh.place_id = p.place_id
    WHERE NOT EXISTS (
        SELECT 1 FROM user_place_interactions i
        WHERE i.user_id = p_user_id AND i.place_category = p.place_category AND i.place_id = p.place_id
    )
)
SELECT s.place_category, s.place_id, s.score FROM scored s
ORDER BY s.score DESC, s.place_category, s.place_id
LIMIT k
$$;

