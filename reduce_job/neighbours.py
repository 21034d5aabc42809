"""Each place's neighbours, kept by the reduce so recommend_places looks them up instead of computing item-kNN.

    similarity(q, p) = users(q, p) / sqrt(users(q) * users(p))

users(q, p) (place_cooccurrence) counts the users who acted on both within NEIGHBOUR_WINDOW (20)
places of each other, in the order the user's places first came (user_place_interactions.position:
run by run, by first action time within a run). Recent company is what item-to-item
recommenders weigh, and it bounds the cost: a new pair pairs with at most the window's places,
however long its user's history (a crawler's pairs cost the window each, like anyone's).
users(q) is unique_users. A place's list (place_neighbours) is its best PLACE_NEIGHBOURS by
similarity, ties by number; users(q) is common to the whole list, so the order is
users(q, p) / sqrt(users(p)).

The run's transaction only queues the pairs it creates (neighbour_pending). After the notice,
`maintain` applies the queue in a transaction of its own, so the counting never delays a run's
data or its notice, and readers keep the committed lists until it commits:
- counts: each queued pair (u, p) adds 1 to users(p, q) and users(q, p) for the window's places
  q that came just before it. A pair's window never changes once it is made (later pairs come
  after it), so the cost is the queued pairs times the window; nothing else of the history is read.
- due: a place whose list may now differ from its counts, because its counts moved or because a
  place on its list gained users (so its similarity fell). A place that is neither keeps a list
  that is still its best: users(p) only grows, so the similarity of a place off its list can only fall.
- the oldest due places, at most NEIGHBOUR_PLACES_PER_RUN, have their lists made again from their
  counts; the rest wait for the next run. With none waiting and none queued, every list equals
  one made from scratch (tests/test_neighbours.py); `status` shows how many wait.
The queue and the interactions commit together, and the transaction reads both in one snapshot
(REPEATABLE READ) and deletes only the queued rows it read: a run committing meanwhile leaves
its pairs for the next time, a maintenance that dies leaves the queue whole, and one maintenance
at a time runs (a session lock; another skips). Before the first count (a new database, the
main server's adopted tables, or another window) it counts from scratch, marking every list due
and leaving the old ones to serve until their turn; so does `rebuild-vectors`, remaking them all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

from reduce_job.upsert import ARRIVAL_ORDER
from witple_batch.schema import NEIGHBOURS_LOCK


@dataclass(frozen=True)
class NeighbourSettings:
    neighbours: int  # PLACE_NEIGHBOURS: K, each place's list length
    places_per_run: int | None  # NEIGHBOUR_PLACES_PER_RUN: lists remade per run (None: every due one)
    window: int = 20  # NEIGHBOUR_WINDOW: a place pairs with the user's places that came just before it


# in the run's transaction: the pairs it created (upsert.INTERACTIONS)
QUEUE = """
INSERT INTO neighbour_pending (user_id, place_category, place_id)
SELECT user_id, place_category, place_id FROM created_pairs
ON CONFLICT DO NOTHING
"""

# pairs within the window in a table of (user_id, place, rk: the user's order), for its rows `b` that
# `counted`: each with the `window` places before it, both ways round
_WINDOW_PAIRS = """
SELECT d.place, d.other, count(*)::int4 AS users FROM (
    SELECT b.place, a.place AS other
    FROM {rows} b CROSS JOIN generate_series(1, %(window)s) g JOIN {rows} a ON a.user_id = b.user_id AND a.rk = b.rk - g
    WHERE {counted}
) p, LATERAL (VALUES (p.place, p.other), (p.other, p.place)) d (place, other)
GROUP BY 1, 2
"""
# the queued pairs, and the `window` places before each user's first queued one: every pair after
# that one is queued too (a pair is numbered after all its user had, and queued when it is made)
_WINDOWS = """
CREATE TEMP TABLE window_rows ON COMMIT DROP AS
SELECT s.user_id, v.id AS place, s.queued, s.rk
FROM (SELECT r.*, row_number() OVER (PARTITION BY r.user_id ORDER BY r.position) AS rk FROM (
    SELECT i.user_id, i.place_category, i.place_id, i.position, true AS queued
    FROM neighbour_pending c JOIN user_place_interactions i USING (user_id, place_category, place_id)
    UNION ALL
    SELECT f.user_id, e.place_category, e.place_id, e.position, false
    FROM (
        SELECT c.user_id, min(i.position) AS first
        FROM neighbour_pending c JOIN user_place_interactions i USING (user_id, place_category, place_id)
        GROUP BY c.user_id
    ) f
    CROSS JOIN LATERAL (
        SELECT place_category, place_id, position FROM user_place_interactions e
        WHERE e.user_id = f.user_id AND e.position < f.first ORDER BY e.position DESC LIMIT %(window)s
    ) e
) r) s  -- numbered before a place is looked up, as every_row is
JOIN place_vectors v USING (place_category, place_id)
"""
_DELTA = f"""
CREATE TEMP TABLE cooccurrence_delta ON COMMIT DROP AS
{_WINDOW_PAIRS.format(rows="window_rows", counted="b.queued")}
"""
_APPLY_DELTA = """
INSERT INTO place_cooccurrence AS t (place, other, users)
SELECT place, other, users FROM cooccurrence_delta ORDER BY place, other
ON CONFLICT (place, other) DO UPDATE SET users = t.users + EXCLUDED.users
"""
# the places whose counts moved, and every list holding a place that gained users
_DUE = """
INSERT INTO place_neighbours_due (place)
SELECT place FROM cooccurrence_delta
UNION
SELECT n.place FROM place_neighbours n WHERE n.other IN (SELECT place FROM window_rows WHERE queued)
ON CONFLICT (place) DO NOTHING
"""

_COUNT_ALL = [
    "DELETE FROM neighbour_pending",
    "TRUNCATE place_cooccurrence, place_neighbours_due",  # no reader of recommend_places reads them
    # the order of upsert.POSITIONS, whether or not a user's rows from before it are numbered yet;
    # numbered before a place is looked up, as the window of a queued pair is
    f"""
CREATE TEMP TABLE every_row ON COMMIT DROP AS
SELECT i.user_id, v.id AS place, i.rk
FROM (
    SELECT user_id, place_category, place_id,
           row_number() OVER (PARTITION BY user_id ORDER BY position NULLS FIRST, {ARRIVAL_ORDER}) AS rk
    FROM user_place_interactions
) i
JOIN place_vectors v USING (place_category, place_id)
""",
    "CREATE INDEX ON every_row (user_id, rk)",
    "ANALYZE every_row",
    f"INSERT INTO place_cooccurrence (place, other, users)\n{_WINDOW_PAIRS.format(rows='every_row', counted='true')}",
    """
INSERT INTO place_neighbours_due (place)
SELECT DISTINCT v.id FROM user_place_interactions i JOIN place_vectors v USING (place_category, place_id)
""",
]

_REMAKE = [
    """
CREATE TEMP TABLE neighbours_now ON COMMIT DROP AS
SELECT place FROM place_neighbours_due ORDER BY since, place LIMIT %(places)s
""",
    "ANALYZE neighbours_now",
    "DELETE FROM place_neighbours n USING neighbours_now d WHERE n.place = d.place",
    """
INSERT INTO place_neighbours (place, rank, other, users)
SELECT place, rank, other, users FROM (
    SELECT c.place, c.other, c.users,
           row_number() OVER (
               PARTITION BY c.place ORDER BY c.users / sqrt(v.unique_users::float8) DESC, c.other
           ) AS rank
    FROM neighbours_now d JOIN place_cooccurrence c USING (place) JOIN place_vectors v ON v.id = c.other
    WHERE v.unique_users > 0
) r
WHERE rank <= %(neighbours)s
""",
    "DELETE FROM place_neighbours_due d USING neighbours_now n WHERE d.place = n.place",
]

_STATE = """
INSERT INTO place_neighbours_state AS t (id, neighbours, window_places, counted_at)
VALUES (true, %(neighbours)s, %(window)s, now())
ON CONFLICT (id) DO UPDATE SET neighbours = EXCLUDED.neighbours, window_places = EXCLUDED.window_places,
    counted_at = CASE WHEN %(counted)s THEN EXCLUDED.counted_at ELSE t.counted_at END
"""


def maintain(
    conn: psycopg.Connection, settings: NeighbourSettings, *, from_scratch: bool = False, wait: bool = False
) -> dict[str, Any]:
    """The queue applied and the due lists remade, in one transaction of its own (`conn` in autocommit
    mode, outside any transaction). Another maintenance holding the lock: wait for it, or else
    return {"skipped": True} and leave the queue to the next run."""
    if wait:
        conn.execute("SELECT pg_advisory_lock(%s)", (NEIGHBOURS_LOCK,))
    elif not conn.execute("SELECT pg_try_advisory_lock(%s)", (NEIGHBOURS_LOCK,)).fetchone()[0]:  # type: ignore[index]
        return {"skipped": True}
    try:
        with conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            conn.execute("SET LOCAL work_mem = '256MB'")  # the counts' sorts and hashes in memory
            return _apply(conn, settings, from_scratch=from_scratch)
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (NEIGHBOURS_LOCK,))


def _apply(conn: psycopg.Connection, settings: NeighbourSettings, *, from_scratch: bool) -> dict[str, Any]:
    state = conn.execute("SELECT neighbours, window_places FROM place_neighbours_state").fetchone()
    # another window counts other pairs: counted again; other list lengths: every list made again
    from_scratch = from_scratch or state is None or state[1] != settings.window
    params = {
        "places": settings.places_per_run,
        "neighbours": settings.neighbours,
        "window": settings.window,
        "counted": from_scratch,
    }
    queued = 0
    if from_scratch:
        for statement in _COUNT_ALL:
            conn.execute(statement, params)  # type: ignore[arg-type]
    else:
        counting = (_WINDOWS, "ANALYZE window_rows", _DELTA, _APPLY_DELTA, _DUE)
        for statement in counting:
            conn.execute(statement, params)  # type: ignore[arg-type]
        queued = conn.execute("DELETE FROM neighbour_pending").rowcount  # the rows this snapshot read
        if state is not None and state[0] != settings.neighbours:
            conn.execute("INSERT INTO place_neighbours_due (place) SELECT DISTINCT place FROM place_neighbours"
                         " ON CONFLICT (place) DO NOTHING")  # fmt: skip
    for statement in [*_REMAKE, _STATE]:
        conn.execute(statement, params)  # type: ignore[arg-type]
    remade, waiting = conn.execute(
        "SELECT (SELECT count(*) FROM neighbours_now), (SELECT count(*) FROM place_neighbours_due)"
    ).fetchone()  # type: ignore[misc]
    return {
        "counted_from_scratch": from_scratch,
        "pairs_counted": queued,
        "lists_remade": int(remade),
        "lists_waiting": int(waiting),
    }
