"""The neighbours recommend_places looks up, kept by each run, against a from-scratch oracle in numpy
(reduce_job/neighbours.py): the counts, every list, the popular places and the centres."""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict

import numpy as np
import orjson
import psycopg
import pytest
from pgvector.psycopg import register_vector

from local_stack.sample_data import Expected, SampleFile, SampleSet, catalogue, generate, install_catalogue
from reduce_job import neighbours
from reduce_job.neighbours import NeighbourSettings
from reduce_job.serving_tables import POPULAR_PLACES
from tests.helpers import fresh_env, pipeline, query, run_module, sync
from witple_batch.schema import NEIGHBOURS_LOCK

PLACES = 60
FRESH = """
SELECT p.id, p.content_vector::text FROM place_vectors p JOIN vector_space s USING (content_model, place_text_version)
WHERE p.unique_users = 0 AND p.catalogue_sha256 IS NOT NULL AND p.content_vector IS NOT NULL ORDER BY p.id
"""
WINDOW = 6  # NEIGHBOUR_WINDOW: most users pass it over the five batches
PAST_WINDOW = "SELECT count(*) FROM (SELECT user_id FROM user_place_interactions GROUP BY 1 HAVING count(*) > %s) u"
UNSEEN = 5  # catalogue places no action names: fresh_places once a sync embeds them
NEIGHBOURS = 4  # short lists, so a place that gains users can leave a list it was on


@pytest.fixture(scope="module")
def batches() -> list[SampleSet]:
    """Five batches of the same users and places, each acting again on places of the last."""
    sample = generate(actions=2_500, users=150, places=PLACES, seed=7, batch_size=50, malformed_files=0)
    files = sorted(sample.files, key=lambda f: f.key)
    return [SampleSet(files[i::5], sample.expected) for i in range(5)]


def _env(s3_env, model_dir, url: str, **extra: str) -> dict[str, str]:
    install_catalogue(url, catalogue(PLACES + UNSEEN))
    return fresh_env(s3_env, model_dir, DATABASE_URL=url, **({"PLACE_NEIGHBOURS": str(NEIGHBOURS)} | extra))


def _run(env: dict[str, str], batch: SampleSet) -> None:
    pipeline({**env, "BATCH_ID": f"n-{uuid.uuid4().hex[:10]}"}, batch, shards=2)


def _from_scratch(url: str, window: int) -> tuple[dict, dict, list]:
    """The counts, each place's list and the popular places, computed from the interactions alone."""
    pairs = query(
        url,
        "SELECT i.user_id, v.id FROM user_place_interactions i JOIN place_vectors v USING (place_category, place_id)"
        " ORDER BY i.user_id, i.position NULLS FIRST, i.first_action_at NULLS FIRST, i.place_category, i.place_id",
    )
    users = {number: n for number, n in query(url, "SELECT id, unique_users FROM place_vectors")}
    places_of: dict[str, list[int]] = defaultdict(list)
    for user, place in pairs:
        places_of[user].append(place)
    counts: Counter = Counter()
    for places in places_of.values():  # each place with the `window` that came before it, both ways
        for j, b in enumerate(places):
            for a in places[max(0, j - window) : j]:
                counts.update([(a, b), (b, a)])
    rows: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for (a, b), n in counts.items():
        if users[b] > 0:
            rows[a].append((b, n))
    lists = {place: sorted(row, key=lambda r: _key(users, *r)) for place, row in rows.items()}
    popular = query(
        url,
        "SELECT place_category, place_id, unique_users FROM place_vectors WHERE unique_users > 0"
        " ORDER BY unique_users DESC, place_category, place_id LIMIT %s",
        (POPULAR_PLACES,),
    )
    return dict(counts), {p: rows[:NEIGHBOURS] for p, rows in lists.items()}, popular


def _key(users: dict[int, int], other: int, together: int) -> tuple[float, int]:
    """A place's position in a list: by similarity key users(p, q) / sqrt(users(q)) descending, then number."""
    return -(together / np.sqrt(float(users[other]))), other


def _stored_lists(url: str) -> dict[int, list[tuple[int, int]]]:
    """Each list in the lists' order by today's users (its ranks are the order it had when last written)."""
    users = dict(query(url, "SELECT id, unique_users FROM place_vectors"))
    lists: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for place, rank, other, together in query(
        url, "SELECT place, rank, other, users FROM place_neighbours ORDER BY 1, 2"
    ):
        assert rank == len(lists[place]) + 1
        lists[place].append((other, together))
    return {place: sorted(rows, key=lambda r: _key(users, *r)) for place, rows in lists.items()}


def _assert_bounds_hold(url: str, counts: dict, waiting: set[int]) -> None:
    """Each place off a list ranks no better than the list's `next` bound; off the reserve too, no better
    than its floor; the reserve holds today's counts. What lets a run keep a list without its counts."""
    users = dict(query(url, "SELECT id, unique_users FROM place_vectors"))
    listed = set(query(url, "SELECT place, other FROM place_neighbours"))
    reserve = {(p, q): n for p, q, n in query(url, "SELECT place, other, users FROM place_neighbour_reserve")}
    bounds = {
        p: ((-nk, no) if nk is not None else None, (-fk, fo) if fk is not None else None)
        for p, nk, no, fk, fo in query(
            url, "SELECT place, next_key, next_other, floor_key, floor_other FROM place_neighbour_bounds"
        )
    }
    assert {p for (p,) in query(url, "SELECT DISTINCT place FROM place_neighbours")} - waiting <= set(bounds)
    for (p, q), n in counts.items():
        if p in waiting or users[q] == 0 or (p, q) in listed:
            continue
        upper, floor = bounds[p]
        assert upper is not None and _key(users, q, n) >= upper
        if (p, q) in reserve:
            assert reserve[p, q] == n
        else:
            assert floor is not None and _key(users, q, n) >= floor


def _assert_follows_counts(url: str, window: int = 20) -> int:
    """Every list not waiting is its place's best by its counts; returns how many wait."""
    counts, wanted, popular = _from_scratch(url, window)
    assert dict(query(url, "SELECT (place, other)::text, users FROM place_cooccurrence")) == {
        f"({a},{b})": n for (a, b), n in counts.items()
    }
    assert query(url, "SELECT count(*) FROM neighbour_pending") == [(0,)]
    waiting = {place for (place,) in query(url, "SELECT place FROM place_neighbours_due")}
    _assert_bounds_hold(url, counts, waiting)
    stored = _stored_lists(url)
    assert {p: rows for p, rows in stored.items() if p not in waiting} == {
        p: rows for p, rows in wanted.items() if p not in waiting
    }
    ranked = "SELECT place_category, place_id, users FROM popular_places ORDER BY users DESC, place_category, place_id"
    assert query(url, ranked) == popular
    fresh = "SELECT place, content_vector::text FROM fresh_places ORDER BY place"
    assert query(url, fresh) == query(url, FRESH)
    return len(waiting)


def test_each_run_keeps_the_lists_a_count_from_scratch_makes(s3_env, model_dir, postgres, batches):
    """After each of five batches every list equals the oracle's; with a budget of five lists per run
    (three batches), every list not waiting does, and the rest wait their turn."""
    whole = _env(s3_env, model_dir, postgres.new_database(), NEIGHBOUR_WINDOW=str(WINDOW))
    budget = _env(s3_env, model_dir, postgres.new_database(), NEIGHBOUR_PLACES_PER_RUN="5")
    sync({**whole, "BATCH_ID": f"n-{uuid.uuid4().hex[:10]}"})
    waited, past_window = [], []
    for index, batch in enumerate(batches):
        _run(whole, batch)
        assert _assert_follows_counts(whole["DATABASE_URL"], WINDOW) == 0
        past_window.append(query(whole["DATABASE_URL"], PAST_WINDOW, (WINDOW,))[0][0])
        if index < 3:
            _run(budget, batch)
            waited.append(_assert_follows_counts(budget["DATABASE_URL"]))
    assert min(waited) > 0  # the budget bound: lists wait
    assert past_window[0] < past_window[-1] > 50  # users passed the window between runs: it bounds their pairs
    url = whole["DATABASE_URL"]
    assert query(url, "SELECT count(*) FROM place_neighbours")[0][0] > NEIGHBOURS * PLACES // 2
    assert query(url, "SELECT count(*) FROM fresh_places")[0][0] == UNSEEN

    # newcomers who act on one place each: on the place most lists hold (no count moves, its
    # similarity falls everywhere) and on a fresh place (no longer fresh)
    members = "SELECT place, other FROM place_neighbours ORDER BY place, other"
    before, counted = query(url, members), query(url, "SELECT sum(users) FROM place_cooccurrence")
    [held] = query(
        url,
        "SELECT v.place_category, v.place_id FROM place_neighbours n JOIN place_vectors v ON v.id = n.other"
        " GROUP BY v.id ORDER BY count(*) DESC, v.id LIMIT 1",
    )
    [fresh] = query(url, "SELECT place_category, place_id FROM fresh_places ORDER BY place LIMIT 1")
    _run(whole, _newcomers_on([held] * 40 + [fresh]))
    assert _assert_follows_counts(url, WINDOW) == 0
    assert query(url, "SELECT sum(users) FROM place_cooccurrence") == counted
    assert query(url, members) != before  # it left lists with no count of theirs moving: it fell below `next`
    assert query(url, "SELECT count(*) FROM fresh_places")[0][0] == UNSEEN - 1

    # a from-scratch rebuild changes no list, and leaves none waiting where the budget left some
    before = _stored_lists(whole["DATABASE_URL"])
    for env in (whole, budget):
        run_module("reduce_job", env, "rebuild-vectors")
    assert _stored_lists(whole["DATABASE_URL"]) == before
    assert _assert_follows_counts(budget["DATABASE_URL"]) == 0


def _newcomers_on(places: list[tuple[str, str]]) -> SampleSet:
    """A newcomer per place, each acting on that place alone."""
    actions = [
        {"user_id": f"newcomer-{n}", "place_category": category, "place_id": place_id, "action_type": "click",
         "timestamp": "2025-01-20T10:00:00Z"}
        for n, (category, place_id) in enumerate(places)
    ]  # fmt: skip
    key = "user-actions/year=2025/month=01/day=20/hour=10/batch-1737367200000-41-newcomer.json"
    return SampleSet([SampleFile(key, orjson.dumps({"actions": actions}))], Expected())


def test_recommend_places_reads_the_centres_and_lists_the_run_made(s3_env, model_dir, database_url, batches):
    """The centres are the means every call used to scan for; the neighbour term is the stored
    lists': emptied, only taste and popularity remain."""
    env = _env(s3_env, model_dir, database_url, PLACE_NEIGHBOURS="50")
    _run(env, batches[0])
    with psycopg.connect(database_url) as conn:
        register_vector(conn)
        behaviour, content = conn.execute("SELECT behaviour_centre, content_centre FROM serving_state").fetchone()
        rows = conn.execute("SELECT behavior_vector, behavior_weight, content_vector FROM place_vectors").fetchall()
    unit = [v.to_numpy() / np.linalg.norm(v.to_numpy()) for v, w, _ in rows if v is not None and w > 0]
    np.testing.assert_allclose(behaviour.to_numpy(), np.mean(unit, axis=0), atol=1e-6)
    np.testing.assert_allclose(content.to_numpy(), np.mean([c.to_numpy() for *_, c in rows], axis=0), atol=1e-6)

    [(user,)] = query(database_url, "SELECT user_id FROM user_behavior_vectors ORDER BY total_actions DESC LIMIT 1")
    call = "SELECT * FROM recommend_places(%s, 10, p_new => 0)"
    before = query(database_url, call, (user,))
    assert before[0][2] > 0.75  # the best neighbour scores 1, and taste takes at most 0.25
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("DELETE FROM place_neighbours")
    after = query(database_url, call, (user,))
    assert len(after) == 10 and max(s for *_, s in after) < 0.3  # 0.25 taste + 0.02 popularity at most


def test_pairs_a_maintenance_did_not_count_wait_for_the_next(s3_env, model_dir, database_url, batches):
    """The run commits and notifies; its pairs wait in the queue while another maintenance holds the
    lock (as they do when the job dies after its notice), and the next run counts them with its own."""
    env = _env(s3_env, model_dir, database_url)
    _run(env, batches[0])
    stored = "SELECT place, rank, other, users FROM place_neighbours ORDER BY place, rank"
    lists = query(database_url, stored)
    with psycopg.connect(database_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (NEIGHBOURS_LOCK,))
        _run(env, batches[1])
    [(queued,)] = query(database_url, "SELECT count(*) FROM neighbour_pending")
    assert queued > 0 and query(database_url, stored) == lists
    assert query(database_url, "SELECT status FROM batch_runs ORDER BY committed_at DESC LIMIT 1") == [("notified",)]
    _run(env, batches[2])
    assert _assert_follows_counts(database_url) == 0


def test_lists_are_kept_from_their_own_rows_and_one_without_bounds_from_all_its_counts(
    s3_env, model_dir, database_url, batches
):
    """With no budget to make any list again, most lists the next batch changes are ranked from their
    list, reserve and moved counts, and each is its place's best; those written without bounds (as by
    a job from before them) are ranked from all their counts."""
    env = _env(s3_env, model_dir, database_url)
    _run(env, batches[0])
    with psycopg.connect(database_url, autocommit=True) as conn:
        unbounded = conn.execute("DELETE FROM place_neighbour_bounds WHERE place % 3 = 0").rowcount
        conn.execute("SELECT pg_advisory_lock(%s)", (NEIGHBOURS_LOCK,))
        _run(env, batches[1])  # its pairs wait in the queue
        conn.execute("SELECT pg_advisory_unlock(%s)", (NEIGHBOURS_LOCK,))
        got = neighbours.maintain(conn, NeighbourSettings(NEIGHBOURS, places_per_run=0))
    assert unbounded > 5 and got["lists_remade"] == 0
    assert got["lists_kept"] > 4 * got["lists_waiting"]
    assert _assert_follows_counts(database_url) == got["lists_waiting"]


def test_rows_from_before_the_window_are_numbered_and_old_lists_serve_until_remade(
    s3_env, model_dir, database_url, batches
):
    """As after migration 020: every position NULL and the state gone. The next run numbers its users'
    old rows below 1 in the order they came, counts from scratch in that order, and remakes the lists
    as its budget allows while the old ones keep serving."""
    env = _env(s3_env, model_dir, database_url, NEIGHBOUR_PLACES_PER_RUN="3")
    _run({**env, "NEIGHBOUR_PLACES_PER_RUN": "0"}, batches[0])
    listed = len(_stored_lists(database_url))
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE user_place_interactions SET position = NULL")
        conn.execute("DELETE FROM place_neighbours_state")
    _run(env, batches[1])
    assert _assert_follows_counts(database_url) > 0  # counted from scratch; most lists wait their turn
    assert len(_stored_lists(database_url)) >= listed  # ... and the old ones serve meanwhile
    old = query(
        database_url,
        "SELECT array_agg(position ORDER BY position) FROM user_place_interactions WHERE position < 1 GROUP BY user_id",
    )
    assert len(old) > 50 and all(p == list(range(-len(p), 0)) for (p,) in old)  # each user's rows: -n .. -1
    half = "SELECT count(*) FROM (SELECT 1 FROM user_place_interactions GROUP BY user_id HAVING count(position)"
    assert query(database_url, half + " BETWEEN 1 AND count(*) - 1) h") == [(0,)]  # a user's rows: all or none
    _run({**env, "NEIGHBOUR_PLACES_PER_RUN": "0"}, batches[2])
    assert _assert_follows_counts(database_url) == 0
