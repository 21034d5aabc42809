"""Place consolidation: every place brought up to date with its users' newest vectors.

An hourly run moves a returning user's vector from its running sums, but the places it acted on
keep holding the vector it had before (`placed_vector`, vectors.py); only the batch's weights
move them. A consolidation carries each such user's vector into every place it acted on, by the
exact delta w (m_now - m_placed), and clears its placed_vector. Afterwards every place is the
weighted mean of its users' vectors, whatever the batch boundaries were.

It runs after a run's notice once CONSOLIDATE_EVERY_HOURS (24 to 168) have passed since the last
pass finished (reduce_job/run.py), for at most CONSOLIDATE_SECONDS_PER_RUN, or on demand and to
the end (`python -m reduce_job consolidate`). One pass at a time (a session lock; another
skips). A pass goes over the users in user order, in chunks of CONSOLIDATE_PAIRS_PER_CHUNK pairs
(or one user's, however many), each its own transaction under the reduce lock, reading the vector
space there. So a run waits at most one chunk, readers never wait, and a pass killed or out of
time leaves every committed chunk done and its cursor (`resume_after`) where they end: the next
run's pass goes on from there, and the pass counts as finished from when it first started.
Memory is one chunk's sums, bounded as in vector_sums.py.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import psycopg

from reduce_job import staging, upsert, vector_sums, vectors
from reduce_job.reduce_lock import take_reduce_lock
from witple_batch.database import DatabaseUnavailable, connect_for
from witple_batch.logs import event
from witple_batch.resources import peak_rss_mb
from witple_batch.schema import CONSOLIDATION_LOCK, migrate
from witple_batch.settings import CommonConfig

log = logging.getLogger(__name__)

USERS_PER_CHUNK = 1_000  # at most; fewer when the last chunk's users had long histories


@dataclass(frozen=True)
class ConsolidationSettings:
    every_hours: int  # a run consolidates after its notice once the last pass finished this long ago
    pairs_per_chunk: int  # one chunk's transaction: seconds, not minutes (200,000 by default)
    seconds_per_run: float | None = None  # a run's pass stops starting chunks after this (None: to the end)


# the next users whose places lag them, after `after`, up to `pairs` pairs (at least one user); their
# pairs are counted for at most `users` candidates, which follows the last chunk's histories
CHUNK = """
CREATE TEMP TABLE affected ON COMMIT DROP AS
SELECT user_id, (row_number() OVER (ORDER BY user_id) - 1)::int4 AS idx, true AS gets_row, false AS summed
FROM (
    SELECT user_id, sum(pairs) OVER (ORDER BY user_id) - pairs AS before
    FROM (
        SELECT s.user_id, (SELECT count(*) FROM user_place_interactions i WHERE i.user_id = s.user_id) AS pairs
        FROM user_content_sums s
        WHERE s.placed_vector IS NOT NULL AND s.user_id > %(after)s
        ORDER BY s.user_id LIMIT %(users)s
    ) d
) c
WHERE before < %(pairs)s
"""

# the places hold each user's placed_vector; they take its behaviour vector
MEANS = [
    """
CREATE TEMP TABLE old_means ON COMMIT DROP AS
SELECT a.idx, s.placed_vector AS vector FROM affected a JOIN user_content_sums s USING (user_id)
""",
    "CREATE UNIQUE INDEX ON old_means (idx)",
    """
CREATE TEMP TABLE placed_means ON COMMIT DROP AS
SELECT a.idx, u.behavior_vector AS vector FROM affected a JOIN user_behavior_vectors u USING (user_id)
WHERE u.behavior_vector IS NOT NULL
""",
    "CREATE UNIQUE INDEX ON placed_means (idx)",
]

CARRIED = "UPDATE user_content_sums s SET placed_vector = NULL FROM affected a WHERE s.user_id = a.user_id"
PROGRESS = "UPDATE place_consolidation SET resume_after = %s, carried = carried + %s"
# every user that lagged when the pass began is carried: the pass counts from its start
FINISHED = "UPDATE place_consolidation SET finished_at = started_at, users = carried, resume_after = '', carried = 0"


def due(conn: psycopg.Connection, every_hours: int) -> bool:
    """Whether the last pass finished more than `every_hours` ago and some user's places lag it."""
    row = conn.execute(
        "SELECT finished_at < now() - make_interval(hours => %s) FROM place_consolidation", (every_hours,)
    ).fetchone()
    if row is None or not row[0]:
        return False
    return conn.execute("SELECT EXISTS (SELECT 1 FROM user_content_sums WHERE placed_vector IS NOT NULL)").fetchone()[0]  # type: ignore[index]


def consolidate(common: CommonConfig, settings: ConsolidationSettings) -> dict[str, Any]:
    """A pass over every user whose places lag it, on a connection of its own (an empty run's
    temporary tables). Returns the users and places carried, the chunks committed, and whether
    the pass finished (or was skipped: another holds the lock)."""
    started = time.monotonic()
    done: dict[str, Any] = {"users": 0, "places": 0, "chunks": 0, "finished": False}
    with connect_for(common, "reduce_job.consolidate") as conn:
        migrate(conn)
        if not conn.execute("SELECT pg_try_advisory_lock(%s)", (CONSOLIDATION_LOCK,)).fetchone()[0]:  # type: ignore[index]
            return {**done, "skipped": True}
        # a pass counts from when it first started, and one that ran out of time goes on where it was
        conn.execute(
            "UPDATE place_consolidation SET started_at = now(), resume_after = '', carried = 0"
            " WHERE started_at IS NULL OR started_at <= finished_at"
        )
        (after,) = conn.execute("SELECT resume_after FROM place_consolidation").fetchone()  # type: ignore[misc]
        staging.create(conn)  # empty: a chunk is a run of nothing with its users' places moved
        candidates = USERS_PER_CHUNK
        while settings.seconds_per_run is None or time.monotonic() - started < settings.seconds_per_run:
            with conn.transaction():
                take_reduce_lock(conn, common)
                last, users, places = _chunk(conn, after, candidates, settings.pairs_per_chunk)
                if last is not None:  # the cursor moves with the chunk it covers
                    conn.execute(PROGRESS, (last, users))
            if last is None:
                conn.execute(FINISHED)
                done["finished"] = True
                break
            after, candidates = last, max(1, min(USERS_PER_CHUNK, 2 * users))
            done |= {"users": done["users"] + users, "places": done["places"] + places, "chunks": done["chunks"] + 1}
    return {**done, "seconds": round(time.monotonic() - started, 3), "peak_rss_mb": round(peak_rss_mb(), 1)}


def _chunk(conn: psycopg.Connection, after: str, candidates: int, pairs: int) -> tuple[str | None, int, int]:
    space = vectors.stored_space(conn)  # under the reduce lock: a run may have moved it since the last chunk
    if space is None:
        return None, 0, 0
    upsert.batch_tables(conn)
    upsert.interactions(conn, space)
    conn.execute(CHUNK, {"after": after, "users": candidates, "pairs": pairs})
    for statement in [*vectors.NUMBERED, *MEANS]:
        conn.execute(statement, space.sql_params())  # type: ignore[arg-type]
    users, places, last = conn.execute(
        "SELECT (SELECT count(*) FROM affected), (SELECT count(*) FROM touched), (SELECT max(user_id) FROM affected)"
    ).fetchone()  # type: ignore[misc]
    if not users:
        return None, 0, 0
    vector_sums.place_behaviour(conn, vector_sums.blocks(conn, users), places, batch=True)
    conn.execute(vectors.PLACE_VECTORS_NOW_BATCH)
    written = upsert.places(conn, space, everything=False)
    conn.execute(CARRIED)
    return last, int(users), written


def consolidate_if_due(common: CommonConfig, conn: psycopg.Connection, settings: ConsolidationSettings) -> None:
    """After a run's notice: a pass when one is due. The run is concluded whatever happens here;
    a pass that stops leaves its committed chunks done and is due again at the next run."""
    try:
        if not due(conn, settings.every_hours):
            return
        done = consolidate(common, settings)
        event(
            log,
            "places consolidated" if done["finished"] else "places partly consolidated; the next run goes on",
            **done,
        )
    except (psycopg.Error, DatabaseUnavailable) as exc:
        event(log, "places not consolidated; the next run continues", logging.ERROR, error=str(exc))
