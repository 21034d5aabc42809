"""Users the main server does not know yet: held back, never a failed batch.

On the main server's database user_behavior_vectors.user_id references users(user_id). A batch
may hold actions of a user the main server has not created yet (sign-up lag, a deleted
account); writing its row would fail the whole batch on the foreign key. So such a user's
totals wait in pending_user_totals (its interactions are recorded as usual and count in place
statistics), and the first batch after the user exists moves them into user_behavior_vectors
and computes its vector from its whole history. Without the foreign key nothing is held (and
whatever waits is released). The users rows this batch writes for are locked FOR KEY SHARE
until it commits, so an account deleted meanwhile waits for the commit instead of failing the
batch on the foreign key. `users_pending` (in every report and notice) says how many wait.

A batch looks up its own pending users and the RELEASE_CHECKS_PER_BATCH others checked longest
ago (pending_user_totals.checked_at; a user held by this batch was just checked, so it joins the
back of the line), not all of them: accounts that never appear wait for good,
and the lookups, locks and deletes of a reduce stay bounded whatever their number. A user who
signs up is released by its next batch if it acts again, else within ceil(pending /
RELEASE_CHECKS_PER_BATCH) batches.

Leaves `user_sums` (the totals each user row receives in this batch: its own actions, or its
released pending ones) and `released_users` for upsert and vectors.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

RELEASE_CHECKS_PER_BATCH = 100_000  # pending users not in the batch looked up per batch, oldest check first

USER_SUMS = """
CREATE TEMP TABLE user_sums ON COMMIT DROP AS
SELECT user_id, sum(clicks) AS clicks, sum(likes) AS likes, sum(bookmarks) AS bookmarks, sum(other) AS other,
       min(first_at) AS first_at, max(last_at) AS last_at
FROM (
    SELECT user_id, clicks, likes, bookmarks, other, first_at, last_at FROM batch_pairs
    WHERE user_id NOT IN (SELECT user_id FROM held_users)
    UNION ALL
    SELECT user_id, clicks, likes, bookmarks, other, first_action_at, last_action_at FROM released_users
) s
GROUP BY user_id
"""

HOLD = """
INSERT INTO pending_user_totals AS t
    (user_id, clicks, likes, bookmarks, other, first_action_at, last_action_at, checked_at)
SELECT user_id, sum(clicks), sum(likes), sum(bookmarks), sum(other), min(first_at), max(last_at), now()
FROM batch_pairs WHERE user_id IN (SELECT user_id FROM held_users) GROUP BY user_id
ON CONFLICT (user_id) DO UPDATE SET
    clicks = t.clicks + EXCLUDED.clicks, likes = t.likes + EXCLUDED.likes, bookmarks = t.bookmarks + EXCLUDED.bookmarks,
    other = t.other + EXCLUDED.other, first_action_at = least(t.first_action_at, EXCLUDED.first_action_at),
    last_action_at = greatest(t.last_action_at, EXCLUDED.last_action_at), checked_at = now(), updated_at = now()
"""


def users_reference(conn: psycopg.Connection) -> tuple[str, str] | None:
    """(table, column) that user_behavior_vectors.user_id must exist in, if a foreign key says so."""
    row = conn.execute(
        "SELECT c.confrelid::regclass::text, a.attname FROM pg_constraint c"
        " JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = c.confkey[1]"
        " WHERE c.contype = 'f' AND c.conrelid = 'user_behavior_vectors'::regclass AND array_length(c.conkey, 1) = 1"
        " LIMIT 1"
    ).fetchone()
    return None if row is None else (row[0], row[1])


def _known(reference: tuple[str, str] | None, alias: str) -> sql.Composable:
    """Whether the user of row `alias` exists where the foreign key points (always, without one)."""
    if reference is None:
        return sql.SQL("true")
    table, column = reference  # table as regclass::text gives it: already quoted where it must be
    return sql.SQL("EXISTS (SELECT 1 FROM {} r WHERE r.{}::text = {}.user_id)").format(
        sql.SQL(table), sql.Identifier(column), sql.Identifier(alias)
    )


def _lock_known(conn: psycopg.Connection, reference: tuple[str, str]) -> None:
    """FOR KEY SHARE on the users rows of this batch's users and of the candidates, until commit."""
    table, column = reference
    conn.execute(
        sql.SQL(
            "SELECT count(*) FROM (SELECT 1 FROM {} r WHERE r.{}::text IN"
            " (SELECT user_id FROM batch_pairs UNION SELECT user_id FROM release_candidates) FOR KEY SHARE OF r) k"
        ).format(sql.SQL(table), sql.Identifier(column))
    )


def _candidates(conn: psycopg.Connection, reference: tuple[str, str] | None) -> None:
    """release_candidates: the pending users this batch looks up (all of them without a foreign key)."""
    others = "" if reference is None else " ORDER BY checked_at, user_id LIMIT %(checks)s"
    conn.execute(
        "CREATE TEMP TABLE release_candidates ON COMMIT DROP AS"
        " SELECT p.user_id FROM pending_user_totals p WHERE p.user_id IN (SELECT user_id FROM batch_pairs)"
        f" UNION SELECT user_id FROM (SELECT user_id FROM pending_user_totals{others}) s",
        {"checks": RELEASE_CHECKS_PER_BATCH},
    )


def hold_and_release(conn: psycopg.Connection) -> dict[str, int]:
    """Hold this batch's unknown users, release the candidates the main server now knows."""
    reference = users_reference(conn)
    conn.execute("CREATE TEMP TABLE held_users (user_id text PRIMARY KEY) ON COMMIT DROP")
    conn.execute("CREATE TEMP TABLE released_users (LIKE pending_user_totals) ON COMMIT DROP")
    _candidates(conn, reference)
    if reference is not None:
        _lock_known(conn, reference)
        conn.execute(
            sql.SQL(
                "INSERT INTO held_users SELECT DISTINCT b.user_id FROM batch_pairs b"
                " WHERE NOT EXISTS (SELECT 1 FROM user_behavior_vectors u WHERE u.user_id = b.user_id) AND NOT {}"
            ).format(_known(reference, "b"))
        )
    conn.execute(
        sql.SQL(
            "WITH gone AS (DELETE FROM pending_user_totals p"
            " WHERE p.user_id IN (SELECT user_id FROM release_candidates) AND {} RETURNING p.*)"
            " INSERT INTO released_users SELECT * FROM gone"
        ).format(_known(reference, "p"))
    )
    conn.execute(  # the candidates still unknown go to the back of the line
        "UPDATE pending_user_totals SET checked_at = now() WHERE user_id IN (SELECT user_id FROM release_candidates)"
    )
    conn.execute(HOLD)
    conn.execute(USER_SUMS)
    row = conn.execute(
        "SELECT (SELECT count(*) FROM held_users), (SELECT count(*) FROM released_users),"
        " (SELECT count(*) FROM pending_user_totals)"
    ).fetchone()
    return {"users_held_back": int(row[0]), "users_released": int(row[1]), "users_pending": int(row[2])}  # type: ignore[index]
