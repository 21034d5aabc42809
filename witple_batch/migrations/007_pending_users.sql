-- Actions of users the main server's `users` table does not know yet. user_behavior_vectors has a
-- foreign key to users there, so such a user's totals wait here (its interactions are recorded as
-- usual, and count in place statistics) and move into user_behavior_vectors with the first batch
-- after the user exists (reduce_job/held_users.py). Without that foreign key nothing waits.
CREATE TABLE IF NOT EXISTS pending_user_totals (
    user_id         text PRIMARY KEY,
    clicks          bigint NOT NULL DEFAULT 0,
    likes           bigint NOT NULL DEFAULT 0,
    bookmarks       bigint NOT NULL DEFAULT 0,
    other           bigint NOT NULL DEFAULT 0,
    first_action_at timestamptz,
    last_action_at  timestamptz,
    held_since      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
