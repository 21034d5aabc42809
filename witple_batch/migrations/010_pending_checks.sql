-- When a batch last looked a pending user up in the main server's users table. A batch looks up
-- its own pending users and the RELEASE_CHECKS_PER_BATCH checked longest ago (reduce_job/held_users.py),
-- not every pending user: anonymous or deleted accounts wait here for good, and a reduce's cost
-- must not grow with every unknown user ever seen.
ALTER TABLE pending_user_totals ADD COLUMN IF NOT EXISTS checked_at timestamptz NOT NULL DEFAULT '-infinity';
CREATE INDEX IF NOT EXISTS pending_user_totals_checked_at ON pending_user_totals (checked_at, user_id);
