-- The tables the main server reads (names and columns kept), plus what exactness needs.
CREATE EXTENSION IF NOT EXISTS vector;

CREATE TABLE IF NOT EXISTS user_behavior_vectors (
    user_id           text PRIMARY KEY,
    behavior_vector   vector(384),              -- weighted mean of content vectors of places acted on
    vector_weight     double precision NOT NULL DEFAULT 0,  -- sum of action weights behind the mean
    like_score        real NOT NULL DEFAULT 0,  -- likes / total_actions * 100
    bookmark_score    real NOT NULL DEFAULT 0,
    click_score       real NOT NULL DEFAULT 0,
    dwell_time_score  real NOT NULL DEFAULT 0,  -- no dwell signal in the input yet
    total_actions     bigint NOT NULL DEFAULT 0,
    total_likes       bigint NOT NULL DEFAULT 0,
    total_bookmarks   bigint NOT NULL DEFAULT 0,
    total_clicks      bigint NOT NULL DEFAULT 0,
    total_other       bigint NOT NULL DEFAULT 0,
    first_action_date timestamptz,
    last_action_date  timestamptz,
    vector_updated_at timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS place_vectors (
    id                 bigserial PRIMARY KEY,
    place_id           text NOT NULL,
    place_category     text NOT NULL,
    content_vector     vector(384),             -- MiniLM embedding of the place text
    behavior_vector    vector(384),             -- weighted mean of the vectors of its users
    combined_vector    vector(384),             -- l2_normalize(content + behavior)
    behavior_weight    double precision NOT NULL DEFAULT 0,
    place_text_version text,
    total_likes        bigint NOT NULL DEFAULT 0,
    total_bookmarks    bigint NOT NULL DEFAULT 0,
    total_clicks       bigint NOT NULL DEFAULT 0,
    total_other        bigint NOT NULL DEFAULT 0,
    total_actions      bigint NOT NULL DEFAULT 0,
    vector_weight      double precision NOT NULL DEFAULT 0,
    unique_users       integer NOT NULL DEFAULT 0,
    avg_dwell_time     real,                    -- no dwell signal in the input yet
    popularity_score   real NOT NULL DEFAULT 0, -- min(2 * (likes + bookmarks + clicks), 100)
    engagement_score   real NOT NULL DEFAULT 0, -- min(5 * (likes + bookmarks), 100)
    first_action_date  timestamptz,
    last_action_date   timestamptz,
    vector_updated_at  timestamptz,
    stats_updated_at   timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now(),
    UNIQUE (place_id, place_category)
);

CREATE TABLE IF NOT EXISTS user_place_interactions (
    user_id           text NOT NULL,
    place_category    text NOT NULL,
    place_id          text NOT NULL,
    clicks            bigint NOT NULL DEFAULT 0,
    likes             bigint NOT NULL DEFAULT 0,
    bookmarks         bigint NOT NULL DEFAULT 0,
    other_actions     bigint NOT NULL DEFAULT 0,
    vector_weight     double precision NOT NULL DEFAULT 0,
    first_action_at   timestamptz,
    last_action_at    timestamptz,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, place_category, place_id)
);
CREATE INDEX IF NOT EXISTS user_place_interactions_place ON user_place_interactions (place_category, place_id);

CREATE TABLE IF NOT EXISTS processed_files (
    key          text PRIMARY KEY,              -- a file is counted exactly once, ever
    etag         text NOT NULL,
    size         bigint NOT NULL,
    batch_id     text NOT NULL,
    status       text NOT NULL CHECK (status IN ('processed', 'rejected')),
    reason       text,
    records      bigint NOT NULL DEFAULT 0,
    accepted     bigint NOT NULL DEFAULT 0,
    rejected     bigint NOT NULL DEFAULT 0,
    processed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS processed_files_batch ON processed_files (batch_id);

CREATE TABLE IF NOT EXISTS batch_runs (
    batch_id         text PRIMARY KEY,
    status           text NOT NULL CHECK (status IN ('committed', 'failed')),
    started_at       timestamptz NOT NULL,
    committed_at     timestamptz,
    finished_at      timestamptz,
    seconds          jsonb NOT NULL DEFAULT '{}',
    stats            jsonb NOT NULL DEFAULT '{}',
    error            text,
    webhook_status   text,                      -- delivered | failed | not_configured
    webhook_attempts integer,
    webhook_error    text,
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- The main server searches places by vector; users are looked up by id (USER_VECTOR_INDEX adds one).
-- A place_vectors the main server created still has double precision[] vectors: 003 adopts it
-- and the reduce builds the index after its commit, CONCURRENTLY (reduce_job/indexes.py).
DO $$
BEGIN
    IF (SELECT udt_name FROM information_schema.columns WHERE table_schema = current_schema()
        AND table_name = 'place_vectors' AND column_name = 'content_vector') = 'vector' THEN
        CREATE INDEX IF NOT EXISTS place_vectors_content_hnsw ON place_vectors USING hnsw (content_vector vector_cosine_ops);
    END IF;
END $$;
