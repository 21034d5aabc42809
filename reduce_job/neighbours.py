"""Each place's neighbours, kept by the reduce so recommend_places looks them up instead of computing item-kNN.

    similarity(q, p) = users(q, p) / sqrt(users(q) * users(p))

users(q, p) (place_cooccurrence) counts the users who acted on both, of those with at most
NEIGHBOUR_USER_PLACES places (1,000): a user past it (a crawler, a bot) counts in no pair, so a
pair costs at most that many counts and one user never makes a run's counting unbounded.
users(q) is unique_users. A place's list (place_neighbours) is its best PLACE_NEIGHBOURS by
similarity, ties by number; users(q) is common to the whole list, so the order is
users(q, p) / sqrt(users(p)).

The run's transaction only queues the pairs it creates (neighbour_pending). After the notice,
`maintain` applies the queue in a transaction of its own, so the counting never delays a run's
data or its notice, and readers keep the committed lists until it commits:
- counts: each queued pair (u, p) of a counted user adds 1 to users(p, q) and users(q, p) for
  every other place q of u; a user who passes the cap takes back the pairs of its older places.
  The cost is the queued pairs times their users' places (at most the cap); nothing else of the
  history is read.
- due: a place whose list may now differ from its counts, because its counts moved or because a
  place on its list gained users (so its similarity fell). A place that is neither keeps a list
  that is still its best: users(p) only grows, so the similarity of a place off its list can only fall.
- the oldest due places, at most NEIGHBOUR_PLACES_PER_RUN, have their lists made again from their
  counts; the rest wait for the next run. With none waiting and none queued, every list equals
  one made from scratch (tests/test_neighbours.py); `status` shows how many wait.
The queue and the interactions commit together, and the transaction reads both in one snapshot
(REPEATABLE READ) and deletes only the queued rows it read: a run committing meanwhile leaves
its pairs for the next time, a maintenance that dies leaves the queue whole, and one maintenance
at a time runs (a session lock; another skips). Before the first count (a new database, or the
main server's adopted tables) it counts from scratch; so does `rebuild-vectors`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

from witple_batch.schema import NEIGHBOURS_LOCK


@dataclass(frozen=True)
class NeighbourSettings:
    neighbours: int  # PLACE_NEIGHBOURS: K, each place's list length
    places_per_run: int | None  # NEIGHBOUR_PLACES_PER_RUN: lists remade per run (None: every due one)
    user_places: int = 1_000  # NEIGHBOUR_USER_PLACES: a user with more places counts in no pair


# in the run's transaction: the pairs it created (upsert.INTERACTIONS)
QUEUE = """
INSERT INTO neighbour_pending (user_id, place_category, place_id)
SELECT user_id, place_category, place_id FROM created_pairs
ON CONFLICT DO NOTHING
"""

# place numbers of the queued pairs, and every place of their users with how many each has now and had
_CREATED = """
CREATE TEMP TABLE created_numbered ON COMMIT DROP AS
SELECT c.user_id, v.id AS place FROM neighbour_pending c JOIN place_vectors v USING (place_category, place_id)
"""
_THEIRS = """
CREATE TEMP TABLE their_places ON COMMIT DROP AS
SELECT i.user_id, v.id AS place, c.place IS NOT NULL AS created,
       count(*) OVER w AS places_now, count(*) FILTER (WHERE c.place IS NULL) OVER w AS places_before
FROM (SELECT DISTINCT user_id FROM created_numbered) u
JOIN user_place_interactions i USING (user_id)
JOIN place_vectors v USING (place_category, place_id)
LEFT JOIN created_numbered c ON c.user_id = i.user_id AND c.place = v.id
WINDOW w AS (PARTITION BY i.user_id)
"""
# A counted user (at most %(cap)s places) adds every ordered pair with one place created: (created,
# any) and (older, created). A user who passes the cap takes back every pair of its older places.
_DELTA = """
CREATE TEMP TABLE cooccurrence_delta ON COMMIT DROP AS
SELECT place, other, sum(d)::int4 AS users FROM (
    SELECT c.place, t.place AS other, 1 AS d FROM created_numbered c JOIN their_places t USING (user_id)
    WHERE t.place <> c.place AND t.places_now <= %(cap)s
    UNION ALL
    SELECT t.place, c.place, 1 FROM created_numbered c JOIN their_places t USING (user_id)
    WHERE NOT t.created AND t.places_now <= %(cap)s
    UNION ALL
    SELECT a.place, b.place, -1 FROM their_places a JOIN their_places b USING (user_id)
    WHERE NOT a.created AND NOT b.created AND a.place <> b.place
      AND a.places_before <= %(cap)s AND a.places_now > %(cap)s
) d
GROUP BY place, other
HAVING sum(d) <> 0
"""
_APPLY_DELTA = [
    """
INSERT INTO place_cooccurrence AS t (place, other, users)
SELECT place, other, users FROM cooccurrence_delta ORDER BY place, other
ON CONFLICT (place, other) DO UPDATE SET users = t.users + EXCLUDED.users
""",
    """
DELETE FROM place_cooccurrence c USING cooccurrence_delta d
WHERE d.users < 0 AND c.place = d.place AND c.other = d.other AND c.users = 0
""",
]
# the places of users counted before or now, and every list holding a place that gained users
_DUE = """
INSERT INTO place_neighbours_due (place)
SELECT place FROM their_places WHERE places_before <= %(cap)s
UNION
SELECT n.place FROM place_neighbours n WHERE n.other IN (SELECT place FROM created_numbered)
ON CONFLICT (place) DO NOTHING
"""

_COUNT_ALL = [
    "DELETE FROM neighbour_pending",
    "TRUNCATE place_cooccurrence, place_neighbours_due",  # no reader of recommend_places reads them
    "DELETE FROM place_neighbours",
    """
CREATE TEMP TABLE every_pair ON COMMIT DROP AS
SELECT user_id, place FROM (
    SELECT i.user_id, v.id AS place, count(*) OVER (PARTITION BY i.user_id) AS places
    FROM user_place_interactions i JOIN place_vectors v USING (place_category, place_id)
) counted
WHERE places <= %(cap)s
""",
    "CREATE INDEX ON every_pair (user_id)",
    """
INSERT INTO place_cooccurrence (place, other, users)
SELECT a.place, b.place, count(*)::int4
FROM every_pair a JOIN every_pair b ON a.user_id = b.user_id AND a.place <> b.place
GROUP BY 1, 2
""",
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
INSERT INTO place_neighbours_state AS t (id, neighbours, user_places, counted_at)
VALUES (true, %(neighbours)s, %(cap)s, now())
ON CONFLICT (id) DO UPDATE SET neighbours = EXCLUDED.neighbours, user_places = EXCLUDED.user_places,
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
    state = conn.execute("SELECT neighbours, user_places FROM place_neighbours_state").fetchone()
    # another cap counts other pairs: counted again; other list lengths: every list made again
    from_scratch = from_scratch or state is None or state[1] != settings.user_places
    params = {
        "places": settings.places_per_run,
        "neighbours": settings.neighbours,
        "cap": settings.user_places,
        "counted": from_scratch,
    }
    queued = 0
    if from_scratch:
        for statement in _COUNT_ALL:
            conn.execute(statement, params)  # type: ignore[arg-type]
    else:
        counting = (_CREATED, "ANALYZE created_numbered", _THEIRS, "ANALYZE their_places", _DELTA, *_APPLY_DELTA, _DUE)
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
