"""Each place's neighbours, kept by the reduce so recommend_places looks them up instead of computing item-kNN.

    similarity(q, p) = users(q, p) / sqrt(users(q) * users(p))

users(q, p) (place_cooccurrence) counts the users who acted on both within NEIGHBOUR_WINDOW (20)
places of each other, in the order the user's places first came (user_place_interactions.position:
run by run, by first action time within a run). Recent company is what item-to-item
recommenders weigh, and it bounds the cost: a new pair pairs with at most the window's places,
however long its user's history (a crawler's pairs cost the window each, like anyone's).
users(q) is unique_users. A place's list (place_neighbours) is its best PLACE_NEIGHBOURS by
similarity, ties by number; users(q) is common to the whole list, so the order is the key
users(q, p) / sqrt(users(p)). A list's ranks are its order when it was last written: the places on
it are always its best, but one whose users grew since may rank a little lower now.

The run's transaction only queues the pairs it creates (neighbour_pending). After the notice,
`maintain` applies the queue in a transaction of its own, so the counting never delays a run's
data or its notice, and readers keep the committed lists until it commits:
- counts: each queued pair (u, p) adds 1 to users(p, q) and users(q, p) for the window's places
  q that came just before it. A pair's window never changes once it is made (later pairs come
  after it), so the cost is the queued pairs times the window; nothing else of the history is read.
- lists, from themselves: beside each list the reserve (place_neighbour_reserve) keeps the next K
  places and the bounds (place_neighbour_bounds) an upper bound on the key of any place off the
  list (`next`) and off the reserve too (`floor`). A key only falls unless its count moves (users(q)
  only grows), and a count that moves is in the queue's delta, so the bounds stay bounds. A list is
  touched when its counts moved or a place on it fell to `next`; it is ranked again from its list,
  reserve and moved counts, and kept when its K-th still beats the floor: its 2K rows and its moved
  counts read, however many places the place has met. A list not touched is still its place's best.
- lists, from their counts: a touched list whose K-th no longer beats its floor is due. The oldest
  due places, at most NEIGHBOUR_PLACES_PER_RUN, have their lists, reserves and bounds made again from
  all their counts; the rest wait for the next run. With none waiting and none queued, every list
  equals one made from scratch (tests/test_neighbours.py); `status` shows how many wait.
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
WITH moved AS (
    INSERT INTO place_cooccurrence AS t (place, other, users)
    SELECT place, other, users FROM cooccurrence_delta ORDER BY place, other
    ON CONFLICT (place, other) DO UPDATE SET users = t.users + EXCLUDED.users
    RETURNING t.place, t.other, t.users
)
INSERT INTO moved_counts SELECT place, other, users FROM moved
"""
# lists that may no longer hold their place's best: their counts moved, or a place on them gained
# users and no longer ranks above the best bound off the list; those waiting to be made again are left
# to that. `bounded`: the list was written with its bounds (a place without is ranked from all its counts).
_TOUCHED = """
CREATE TEMP TABLE touched ON COMMIT DROP AS
SELECT t.place, EXISTS (SELECT 1 FROM place_neighbour_bounds b WHERE b.place = t.place) AS bounded
FROM (
    SELECT place FROM moved_counts
    UNION
    SELECT n.place
    FROM place_neighbours n LEFT JOIN place_neighbour_bounds b USING (place) JOIN place_vectors v ON v.id = n.other
    WHERE n.other IN (SELECT place FROM window_rows WHERE queued) AND (b.place IS NULL
        OR (-(n.users / sqrt(nullif(v.unique_users, 0)::float8)), n.other) >= (-b.next_key, b.next_other))
    EXCEPT
    SELECT place FROM place_neighbours_due
) t
"""
_COUNTING = [
    _WINDOWS,
    "ANALYZE window_rows",
    _DELTA,
    "CREATE TEMP TABLE moved_counts (place bigint, other bigint, users integer) ON COMMIT DROP",
    _APPLY_DELTA,
    "ANALYZE moved_counts",
    _TOUCHED,
    "ANALYZE touched",
]
# a touched list's candidates: its counts that moved, as they are now, and its list and reserve
# otherwise; all its counts when it has no bounds (a place new to the counts, or a list written without)
_TOUCHED_CANDIDATES = """
SELECT m.place, m.other, m.users FROM moved_counts m JOIN touched t USING (place) WHERE t.bounded
UNION ALL
SELECT n.place, n.other, n.users FROM (
    SELECT place, other, users FROM place_neighbours UNION ALL SELECT place, other, users FROM place_neighbour_reserve
) n JOIN touched t USING (place)
WHERE t.bounded AND NOT EXISTS (SELECT 1 FROM moved_counts m WHERE m.place = n.place AND m.other = n.other)
UNION ALL
SELECT c.place, c.other, c.users FROM place_cooccurrence c JOIN touched t USING (place) WHERE NOT t.bounded
"""

_COUNT_ALL = [
    "DELETE FROM neighbour_pending",
    # no reader of recommend_places reads them
    "TRUNCATE place_cooccurrence, place_neighbours_due, place_neighbour_reserve, place_neighbour_bounds",
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

# the best 2K of each list's candidates by the lists' order, and the next: the best past its reserve.
# `ranked` and `kept` are left without statistics: with them the planner can take an anti-join of the
# writes below for one row and loop over it, minutes on a large batch instead of a second
_RANKED = """
CREATE TEMP TABLE ranked ON COMMIT DROP AS
SELECT * FROM (
    SELECT c.*, row_number() OVER (PARTITION BY c.place ORDER BY c.key DESC, c.other) AS rank
    FROM (
        SELECT c.place, c.other, c.users, c.users / sqrt(v.unique_users::float8) AS key
        FROM ({candidates}) c JOIN place_vectors v ON v.id = c.other
        WHERE v.unique_users > 0
    ) c
) r
WHERE rank <= 2 * %(neighbours)s + 1
"""
# the lists whose best K are known, with their new bounds: the floor is the best of the old floor and
# the candidates past the reserve; `next` the best of that and the first after the list. A list is
# known with no old floor (nothing it has is off its candidates) or when its K-th beats the floor.
_KEPT = """
CREATE TEMP TABLE kept ON COMMIT DROP AS
SELECT l.place, f.key AS floor_key, f.other AS floor_other, x.key AS next_key, x.other AS next_other
FROM {lists} l
LEFT JOIN place_neighbour_bounds b USING (place)
LEFT JOIN ranked k ON k.place = l.place AND k.rank = %(neighbours)s
LEFT JOIN ranked r ON r.place = l.place AND r.rank = %(neighbours)s + 1
LEFT JOIN ranked o ON o.place = l.place AND o.rank = 2 * %(neighbours)s + 1
CROSS JOIN LATERAL (
    SELECT * FROM (VALUES (b.floor_key, b.floor_other), (o.key, o.other)) f (key, other)
    ORDER BY key DESC NULLS LAST, other LIMIT 1
) f
CROSS JOIN LATERAL (
    SELECT * FROM (VALUES (f.key, f.other), (r.key, r.other)) x (key, other)
    ORDER BY key DESC NULLS LAST, other LIMIT 1
) x
WHERE b.floor_key IS NULL OR (-k.key, k.other) < (-b.floor_key, b.floor_other)
"""


def _rewrite(table: str, columns: str, ranks: str, same_rank: str) -> list[str]:
    """The kept lists' rows of `table` made the ranked rows within `ranks`, writing only rows that
    differ (`same_rank`: whether a stored row t and a ranked row r must share their rank too): most
    of a list survives a run."""
    return [
        f"""
DELETE FROM {table} t USING kept k WHERE t.place = k.place AND NOT EXISTS (
    SELECT 1 FROM ranked r
    WHERE r.place = t.place AND r.other = t.other AND r.users = t.users AND r.rank {ranks} AND {same_rank}
)""",
        f"""
INSERT INTO {table} ({columns})
SELECT {columns} FROM ranked r JOIN kept USING (place)
WHERE r.rank {ranks} AND NOT EXISTS (
    SELECT 1 FROM {table} t WHERE t.place = r.place AND t.other = r.other AND t.users = r.users AND {same_rank}
)""",
    ]


_RESERVE_RANKS = "BETWEEN %(neighbours)s + 1 AND 2 * %(neighbours)s"
_WRITE = [
    *_rewrite("place_neighbours", "place, rank, other, users", "<= %(neighbours)s", "t.rank = r.rank"),
    *_rewrite("place_neighbour_reserve", "place, other, users", _RESERVE_RANKS, "true"),
    "DELETE FROM place_neighbour_bounds b USING kept k WHERE b.place = k.place",
    """
INSERT INTO place_neighbour_bounds (place, next_key, next_other, floor_key, floor_other)
SELECT place, next_key, next_other, floor_key, floor_other FROM kept
""",
]
# touched lists kept from their candidates; the rest wait to be made again from their counts
_KEEP = [
    _RANKED.format(candidates=_TOUCHED_CANDIDATES),
    _KEPT.format(lists="touched"),
    "INSERT INTO place_neighbours_due (place) SELECT place FROM touched EXCEPT SELECT place FROM kept"
    " ON CONFLICT (place) DO NOTHING",
    *_WRITE,
]
# the oldest due lists made again from all their counts
_REMAKE = [
    """
CREATE TEMP TABLE neighbours_now ON COMMIT DROP AS
SELECT place FROM place_neighbours_due ORDER BY since, place LIMIT %(places)s
""",
    "ANALYZE neighbours_now",
    "DELETE FROM place_neighbour_bounds b USING neighbours_now n WHERE b.place = n.place",  # bounds from counts
    _RANKED.format(candidates="SELECT place, other, users FROM neighbours_now JOIN place_cooccurrence USING (place)"),
    _KEPT.format(lists="neighbours_now"),
    *_WRITE,
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
    """The queue applied, the lists it touches ranked again and the due ones made again, in one
    transaction of its own (`conn` in autocommit mode, outside any transaction). Another maintenance
    holding the lock: wait for it, or else return {"skipped": True} and leave the queue to the next run."""
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
    queued = kept = 0
    if from_scratch:
        for statement in _COUNT_ALL:
            conn.execute(statement, params)  # type: ignore[arg-type]
    else:
        if state is not None and state[0] != settings.neighbours:  # every list made again
            conn.execute("INSERT INTO place_neighbours_due (place) SELECT DISTINCT place FROM place_neighbours"
                         " ON CONFLICT (place) DO NOTHING")  # fmt: skip
        for statement in _COUNTING:
            conn.execute(statement, params)  # type: ignore[arg-type]
        queued = conn.execute("DELETE FROM neighbour_pending").rowcount  # the rows this snapshot read
        for statement in _KEEP:
            conn.execute(statement, params)  # type: ignore[arg-type]
        kept = conn.execute("SELECT count(*) FROM kept").fetchone()[0]  # type: ignore[index]
        conn.execute("DROP TABLE ranked, kept")  # the remake makes its own
    for statement in [*_REMAKE, _STATE]:
        conn.execute(statement, params)  # type: ignore[arg-type]
    remade, waiting = conn.execute(
        "SELECT (SELECT count(*) FROM neighbours_now), (SELECT count(*) FROM place_neighbours_due)"
    ).fetchone()  # type: ignore[misc]
    return {
        "counted_from_scratch": from_scratch,
        "pairs_counted": queued,
        "lists_kept": kept,
        "lists_remade": int(remade),
        "lists_waiting": int(waiting),
    }
