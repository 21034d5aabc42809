-- Item-to-item neighbours made by the batch, so recommend_places looks them up instead of
-- computing item-kNN per call (reduce_job/neighbours.py keeps these tables).
--   similarity(q, p) = users(q, p) / sqrt(users(q) * users(p))
-- users(q, p): the users who acted on both places; users(q): place_vectors.unique_users.
-- Places are numbered by place_vectors.id.
CREATE TABLE IF NOT EXISTS place_cooccurrence (
    place bigint NOT NULL,
    other bigint NOT NULL,
    users integer NOT NULL,  -- users who acted on both, of those with at most NEIGHBOUR_USER_PLACES places
    PRIMARY KEY (place, other)
);

-- the pairs runs created since the counts last took them: a run queues, the maintenance after its notice counts
CREATE TABLE IF NOT EXISTS neighbour_pending (
    user_id        text NOT NULL,
    place_category text NOT NULL,
    place_id       text NOT NULL,
    PRIMARY KEY (user_id, place_category, place_id)
);

-- each place's best PLACE_NEIGHBOURS by similarity, ties by number
CREATE TABLE IF NOT EXISTS place_neighbours (
    place bigint NOT NULL,
    rank  smallint NOT NULL,
    other bigint NOT NULL,
    users integer NOT NULL,  -- users(place, other) when the list was made
    PRIMARY KEY (place, rank)
);
CREATE INDEX IF NOT EXISTS place_neighbours_other ON place_neighbours (other);

-- places whose list may differ from their counts, oldest first: a run remakes NEIGHBOUR_PLACES_PER_RUN
CREATE TABLE IF NOT EXISTS place_neighbours_due (
    place bigint PRIMARY KEY,
    since timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS place_neighbours_due_since ON place_neighbours_due (since, place);

-- the lists' state: none until a run has counted from scratch
CREATE TABLE IF NOT EXISTS place_neighbours_state (
    id         boolean PRIMARY KEY DEFAULT true CHECK (id),  -- one row
    neighbours  integer NOT NULL,      -- PLACE_NEIGHBOURS the lists are made with
    user_places integer NOT NULL,      -- NEIGHBOUR_USER_PLACES the counts are made with
    counted_at  timestamptz NOT NULL   -- when the co-occurrence was last counted from scratch
);

-- What else every call would scan place_vectors for (reduce_job/serving_tables.py keeps them).
-- The most popular places, by unique_users then key: the candidates of a user with little history.
CREATE TABLE IF NOT EXISTS popular_places (
    place          bigint NOT NULL,  -- place_vectors.id
    place_category text NOT NULL,
    place_id       text NOT NULL,
    users          integer NOT NULL,
    PRIMARY KEY (place_category, place_id)
);
CREATE INDEX IF NOT EXISTS popular_places_order ON popular_places (users DESC, place_category, place_id);

-- the catalogue places no one has acted on, with content of the current space: what the new-places term searches
CREATE TABLE IF NOT EXISTS fresh_places (
    place          bigint PRIMARY KEY,  -- place_vectors.id
    place_category text NOT NULL,
    place_id       text NOT NULL,
    content_vector vector(384) NOT NULL
);

-- the centres the taste terms subtract; no row before the first run
CREATE TABLE IF NOT EXISTS serving_state (
    id               boolean PRIMARY KEY DEFAULT true CHECK (id),  -- one row
    behaviour_centre vector(384),  -- mean of the normalised place behaviour vectors
    content_centre   vector(384),  -- mean of the content vectors of the current space
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- On a database that already has vectors, the three as the next run would make them, so calls made
-- before it answer as they will after (serving_tables.refresh keeps them from then on); the HNSW
-- index is built once its rows are in, which is cheaper than inserting them into a graph one by one.
-- The neighbour lists come with the first run's counting, after its notice (reduce_job/neighbours.py).
INSERT INTO popular_places (place, place_category, place_id, users)
SELECT id, place_category, place_id, unique_users FROM place_vectors WHERE unique_users > 0
ORDER BY unique_users DESC, place_category, place_id LIMIT 1000
ON CONFLICT DO NOTHING;
INSERT INTO fresh_places (place, place_category, place_id, content_vector)
SELECT p.id, p.place_category, p.place_id, p.content_vector FROM place_vectors p JOIN vector_space s
    ON p.content_model = s.content_model AND p.place_text_version = s.place_text_version
WHERE p.unique_users = 0 AND p.catalogue_sha256 IS NOT NULL AND p.content_vector IS NOT NULL
ON CONFLICT DO NOTHING;
INSERT INTO serving_state (id, behaviour_centre, content_centre)
SELECT true,
       (SELECT avg(l2_normalize(behavior_vector)) FROM place_vectors
        WHERE behavior_vector IS NOT NULL AND behavior_weight > 0),
       (SELECT avg(p.content_vector) FROM place_vectors p JOIN vector_space s
            ON p.content_model = s.content_model AND p.place_text_version = s.place_text_version
        WHERE p.content_vector IS NOT NULL)
FROM vector_space
ON CONFLICT DO NOTHING;
CREATE INDEX IF NOT EXISTS fresh_places_content_hnsw ON fresh_places USING hnsw (content_vector vector_cosine_ops);

-- recommend_places as migration 016 made it, reading what the batch made instead of scanning:
-- - item-kNN from place_neighbours (the best p_neighbours of each recent place, up to PLACE_NEIGHBOURS),
--   with every user counted (016 sampled 500 users of a place and 1,000 places of each);
-- - the new places: the 256 nearest to the user's content profile in fresh_places' HNSW index,
--   re-ranked by the centred cosine; the best 64 score, as in 016;
-- - the centres and the most popular places from serving_state and popular_places.
-- Only candidates are scored: the neighbours, those new places and the k most popular places the
-- user has not acted on; a place none of them reaches would score at most its taste and popularity.
-- p_neighbour_places is kept for callers of 016; the counts behind the lists have no such cap.
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
LANGUAGE sql STABLE
SET hnsw.ef_search = 256  -- the index search keeps as many candidates as near_new asks for
AS $$
WITH weights AS (
    SELECT coalesce((action_weights ->> 'click')::float8, 1) AS wc,
           coalesce((action_weights ->> 'like')::float8, 3) AS wl,
           coalesce((action_weights ->> 'bookmark')::float8, 5) AS wb
    FROM (SELECT (SELECT action_weights FROM vector_space) AS action_weights) s
), state AS (
    SELECT (SELECT behaviour_centre FROM serving_state) AS behaviour_centre,
           (SELECT content_centre FROM serving_state) AS content_centre,
           ln(2 + coalesce((SELECT max(users) FROM popular_places), 0)) AS reach
), recent AS (
    SELECT p.id, p.unique_users, p.behavior_vector, p.behavior_weight, p.content_vector,
           p.content_model, p.place_text_version, r.weight
    FROM (
        SELECT i.place_category, i.place_id, i.clicks * w.wc + i.likes * w.wl + i.bookmarks * w.wb AS weight
        FROM user_place_interactions i, weights w
        WHERE i.user_id = p_user_id
        ORDER BY i.last_action_at DESC NULLS LAST, i.place_category DESC, i.place_id DESC
        LIMIT p_recent
    ) r JOIN place_vectors p USING (place_category, place_id)
), knn AS (
    SELECT n.other AS id, sum(n.users / sqrt(r.unique_users::float8 * p.unique_users)) AS s
    FROM recent r
    JOIN place_neighbours n ON n.place = r.id AND n.rank <= p_neighbours
    JOIN place_vectors p ON p.id = n.other
    WHERE r.unique_users > 0 AND p.unique_users > 0
    GROUP BY n.other
), profile AS (
    SELECT sum(witple_scale(l2_normalize(l2_normalize(r.behavior_vector) - st.behaviour_centre), r.weight)) AS taste
    FROM recent r CROSS JOIN state st
    WHERE r.behavior_vector IS NOT NULL AND r.behavior_weight > 0 AND r.weight > 0
), content_profile AS (
    SELECT sum(witple_scale(l2_normalize(r.content_vector - st.content_centre), r.weight)) AS taste
    FROM recent r CROSS JOIN state st JOIN vector_space s
        ON r.content_model = s.content_model AND r.place_text_version = s.place_text_version
    WHERE r.content_vector IS NOT NULL AND r.weight > 0
), near_new AS (
    SELECT f.place AS id, f.place_category, f.place_id, f.content_vector FROM fresh_places f
    WHERE p_new <> 0
    ORDER BY f.content_vector <=> (SELECT taste FROM content_profile)
    LIMIT 256
), fresh AS (
    SELECT id, power(0.5::float8, j - 1) AS s
    FROM (
        SELECT id, row_number() OVER (ORDER BY c DESC, place_category, place_id) AS j
        FROM (
            SELECT n.id, n.place_category, n.place_id, 1 - ((n.content_vector - st.content_centre) <=> f.taste) AS c
            FROM near_new n CROSS JOIN state st CROSS JOIN content_profile f
            WHERE NOT EXISTS (
                SELECT 1 FROM user_place_interactions i
                WHERE i.user_id = p_user_id AND i.place_category = n.place_category AND i.place_id = n.place_id
            )
        ) m
        WHERE c > 0 AND c <> 'NaN'  -- NaN: a zero vector (no profile, or a place at the mean)
    ) ranked
    WHERE j <= 64  -- 0.5^63 of p_new is below any other score's precision; 0.5^1075 is below a double's range
), popular AS (
    SELECT pp.place AS id FROM popular_places pp
    WHERE NOT EXISTS (
        SELECT 1 FROM user_place_interactions i
        WHERE i.user_id = p_user_id AND i.place_category = pp.place_category AND i.place_id = pp.place_id
    )
    ORDER BY pp.users DESC, pp.place_category, pp.place_id
    LIMIT k
), candidates AS (
    SELECT p.*, knn.s AS knn_s, fresh.s AS fresh_s
    FROM (SELECT id FROM knn UNION SELECT id FROM fresh UNION SELECT id FROM popular) c
    JOIN place_vectors p USING (id)
    LEFT JOIN knn USING (id)
    LEFT JOIN fresh USING (id)
    WHERE NOT EXISTS (
        SELECT 1 FROM user_place_interactions i
        WHERE i.user_id = p_user_id AND i.place_category = p.place_category AND i.place_id = p.place_id
    )
), best AS (
    SELECT max(knn_s) AS top FROM candidates
), scored AS (
    SELECT c.place_category::text AS place_category, c.place_id::text AS place_id,
           coalesce(c.knn_s / nullif(best.top, 0), 0)
           -- NaN: a zero vector (a place alone, or no profile) adds no taste
           + p_taste * CASE WHEN c.behavior_weight > 0 THEN
                 coalesce(1 - nullif((l2_normalize(c.behavior_vector) - st.behaviour_centre) <=> profile.taste, 'NaN'), 0)
             ELSE 0 END
           + p_new * coalesce(c.fresh_s, 0)
           + p_popularity * ln(1 + greatest(c.unique_users, 0)) / st.reach AS score
    FROM candidates c CROSS JOIN state st CROSS JOIN profile CROSS JOIN best
)
SELECT s.place_category, s.place_id, s.score FROM scored s
ORDER BY s.score DESC, s.place_category, s.place_id
LIMIT k
$$;
