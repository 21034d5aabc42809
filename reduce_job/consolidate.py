"""Place consolidation: every place brought up to date with its users' newest vectors.

An hourly run moves a returning user's vector from its running sums, but the places it acted on
keep holding the vector it had before (`placed_vector`, vectors.py); only the batch's weights
move them. A consolidation carries each such user's vector into every place it acted on, by the
exact delta w (m_now - m_placed), and clears its placed_vector. Afterwards every place is the
weighted mean of its users' vectors, whatever the batch boundaries were.

It runs after a run's notice once CONSOLIDATE_EVERY_HOURS (24 to 168) have passed since the last
pass finished (reduce_job/run.py), or on demand (`python -m reduce_job consolidate`). A pass goes
over the users in user order, in chunks of CONSOLIDATE_PAIRS_PER_CHUNK pairs (or one user's), each
its own transaction under the reduce lock. So a run waits at most one chunk, readers never wait,
and a killed pass leaves every committed chunk done; the next pass carries the rest. Memory is one
chunk's sums, bounded as in vector_sums.py.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg

from reduce_job import staging, upsert, vector_sums, vectors
from reduce_job.reduce_lock import take_reduce_lock
from witple_batch.database import connect_for
from witple_batch.logs import event
from witple_batch.resources import peak_rss_mb
from witple_batch.settings import CommonConfig
from witple_batch.vector_space import VectorSpace

log = logging.getLogger(__name__)

USERS_PER_CHUNK = 10_000


@dataclass(frozen=True)
class ConsolidationSettings:
    every_hours: int  # a run consolidates after its notice once the last pass finished this long ago
    pairs_per_chunk: int  # one chunk's transaction: seconds, not minutes (200,000 by default)


# the next users whose places lag them, after `after`, up to `pairs` pairs (at least one user)
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


def due(conn: psycopg.Connection, every_hours: int) -> bool:
    """Whether the last pass finished more than `every_hours` ago and some user's places lag it."""
    row = conn.execute(
        "SELECT finished_at < now() - make_interval(hours => %s) FROM place_consolidation", (every_hours,)
    ).fetchone()
    if row is None or not row[0]:
        return False
    return conn.execute("SELECT EXISTS (SELECT 1 FROM user_content_sums WHERE placed_vector IS NOT NULL)").fetchone()[0]  # type: ignore[index]


def consolidate(common: CommonConfig, settings: ConsolidationSettings) -> dict[str, Any]:
    """One pass over every user whose places lag it, on a connection of its own (an empty run's
    temporary tables). Returns the users and places carried and the chunks committed."""
    started = time.perf_counter()
    done = {"users": 0, "places": 0, "chunks": 0}
    with connect_for(common, "reduce_job.consolidate") as conn:
        stored = vectors.stored_space(conn)
        if stored is None:
            return {**done, "seconds": 0.0, "peak_rss_mb": round(peak_rss_mb(), 1)}
        began = datetime.now(UTC)
        conn.execute("UPDATE place_consolidation SET started_at = %s", (began,))
        staging.create(conn)  # empty: a chunk is a run of nothing with its users' places moved
        after = ""
        while True:
            with conn.transaction():
                take_reduce_lock(conn, common)
                last, users, places = _chunk(conn, stored, after, settings.pairs_per_chunk)
            if last is None:
                break
            after = last
            done = {"users": done["users"] + users, "places": done["places"] + places, "chunks": done["chunks"] + 1}
        # every user that lagged when the pass began is carried: the pass counts from its start
        conn.execute("UPDATE place_consolidation SET finished_at = %s, users = %s", (began, done["users"]))
    return {**done, "seconds": round(time.perf_counter() - started, 3), "peak_rss_mb": round(peak_rss_mb(), 1)}


def _chunk(conn: psycopg.Connection, space: VectorSpace, after: str, pairs: int) -> tuple[str | None, int, int]:
    upsert.batch_tables(conn)
    upsert.interactions(conn, space)
    conn.execute(CHUNK, {"after": after, "users": USERS_PER_CHUNK, "pairs": pairs})
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
        event(log, "places consolidated", **consolidate(common, settings))
    except psycopg.Error as exc:
        event(log, "places not consolidated; the next run continues", logging.ERROR, error=str(exc))
