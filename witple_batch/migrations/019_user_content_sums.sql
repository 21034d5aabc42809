-- Each user's running sums, so an hourly run adds its own pairs instead of re-reading the user's
-- history (reduce_job/vectors.py), and what the place behaviour vectors hold for a user whose
-- vector moved since the last place consolidation (reduce_job/consolidate.py).
CREATE TABLE IF NOT EXISTS user_content_sums (
    user_id       text PRIMARY KEY,
    content_sum   bytea NOT NULL,   -- sum of w * content over the user's pairs in the space: 384 float64, little-endian
    weight        float8 NOT NULL,  -- sum of w over the same pairs; behavior_vector = content_sum / weight
    placed_vector vector(384)       -- the vector every place holds for this user, when not its behavior_vector
);
-- the users a consolidation has left to carry into their places
CREATE INDEX IF NOT EXISTS user_content_sums_placed ON user_content_sums (user_id) WHERE placed_vector IS NOT NULL;

-- when the places were last brought up to date with every user's vector; a fresh table is up to
-- date (no user has sums yet, so every place holds its users' vectors)
CREATE TABLE IF NOT EXISTS place_consolidation (
    id           boolean PRIMARY KEY DEFAULT true CHECK (id),
    started_at   timestamptz,
    finished_at  timestamptz NOT NULL,
    users        bigint NOT NULL DEFAULT 0,   -- carried into their places by the last finished pass
    resume_after text NOT NULL DEFAULT '',    -- the pass under way: its last user carried, where it goes on
    carried      bigint NOT NULL DEFAULT 0    -- ... and the users it has carried so far
);
INSERT INTO place_consolidation (finished_at) VALUES (now()) ON CONFLICT (id) DO NOTHING;
