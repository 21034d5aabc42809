"""A deployment onto the main server's own database: its tables adopted in place, its foreign key
respected, its reads and its webhook model still served."""

from __future__ import annotations

import math
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import orjson
import psycopg
import pytest
from pgvector.psycopg import register_vector

from local_stack import main_server
from local_stack.sample_data import SampleSet, catalogue, generate, install_catalogue
from reduce_job import held_users
from tests.helpers import (
    REPO,
    fresh_env,
    pipeline,
    plan_run,
    query,
    run_child,
    run_module,
    seed,
    start_module,
    wait_for,
)
from witple_batch.run_layout import RunLayout, load_report
from witple_batch.s3 import s3_client

PLACES = 60
NEXT_DAY = datetime(2025, 1, 20, 9, tzinfo=UTC)
VALID = [0.01 * (i % 7) for i in range(384)]


@pytest.fixture(scope="module")
def sample() -> SampleSet:
    return generate(actions=2_000, users=90, places=PLACES, seed=51, batch_size=40)


def known(user: str) -> bool:
    """Two users in three exist in the main server's users table; the rest sign up later."""
    return int(user.split("-")[1]) % 3 != 0


def _seed_main_server(url: str, users: list[str]) -> None:
    main_server.create(url)
    install_catalogue(url, catalogue(PLACES))
    with psycopg.connect(url, autocommit=True) as conn:
        for user in users:
            if known(user):
                conn.execute("INSERT INTO users (user_id, email) VALUES (%s, %s)", (user, f"{user}@example.com"))
        # rows the original batch wrote: one good vector, one too short, one with NaN, one empty, NULL totals
        conn.execute(
            "INSERT INTO user_behavior_vectors (user_id, behavior_vector, total_actions, total_clicks, total_likes)"
            " VALUES ('user-000001', %s, 10, 10, 0), ('user-000002', %s, 4, 4, 0), ('user-000004', %s, NULL, NULL, 2),"
            " ('user-000005', '{}', 1, 1, 0)",
            (VALID, VALID[:383], [math.nan, *VALID[1:]]),
        )
        conn.execute("UPDATE user_behavior_vectors SET vector_updated_at = now() - interval '3 days'")
        # the original inserted a row per run: place 100000 twice, the newer with a value float4
        # cannot hold; one vector of a wrong length
        conn.execute(
            "INSERT INTO place_vectors (place_id, place_category, content_vector, total_clicks, total_likes,"
            " unique_users, vector_updated_at) VALUES ('100000', 'restaurants', %s, 3, 1, 2, '2025-01-01'),"
            " ('100000', 'restaurants', %s, 4, 0, 3, '2025-01-02'), ('100001', 'accommodation', %s, 5, 0, 1, now())",
            (VALID, [1e39, *VALID[1:]], VALID[:10]),
        )


def _env(s3_env, model_dir, url, receiver=None, **extra):
    more = {"DATABASE_URL": url, **extra}
    if receiver is not None:
        more["WEBHOOK_URL"] = receiver.url
    return fresh_env(s3_env, model_dir, **more)


def test_dry_run_changes_nothing_and_prints_the_plan(s3_env, model_dir, database_url, sample):
    _seed_main_server(database_url, sorted(sample.expected.users))
    types_before = main_server.column_types(database_url)
    rows_before = query(database_url, "SELECT count(*), sum(total_clicks) FROM place_vectors")
    result = run_module("reduce_job", _env(s3_env, model_dir, database_url), "migrate", "--dry-run")
    assert result.returncode == 0, result.stderr[-2000:]
    plan = result.stdout
    assert "003 adopt_main_server_tables" in plan
    assert "behavior_vector: double precision[] -> vector(384): 1 rows convert, 3 become NULL (empty," in plan
    assert "content_vector: double precision[] -> vector(384): 1 rows convert, 2 become NULL (empty," in plan
    assert "place_vectors: 1 duplicate (place_id, place_category) rows merge into the oldest [1 rows]" in plan
    assert "total_clicks: integer -> bigint, 1 NULL totals become 0" in plan
    assert "user_behavior_vectors: one ALTER TABLE, one rewrite of 4 rows:" in plan
    assert "place_vectors: one ALTER TABLE, one rewrite of 3 rows:" in plan
    assert main_server.column_types(database_url) == types_before
    assert query(database_url, "SELECT count(*), sum(total_clicks) FROM place_vectors") == rows_before
    assert query(database_url, "SELECT to_regclass('schema_migrations') IS NULL") == [(True,)]

    applied = run_module("reduce_job", _env(s3_env, model_dir, database_url), "migrate")
    assert applied.returncode == 0, applied.stderr[-2000:]
    with psycopg.connect(database_url) as conn:
        register_vector(conn)
        vectors = conn.execute("SELECT user_id, behavior_vector FROM user_behavior_vectors ORDER BY user_id").fetchall()
        [(merged, clicks)] = conn.execute(
            "SELECT content_vector, total_clicks FROM place_vectors WHERE place_id = '100000'"
        ).fetchall()
    assert [u for u, v in vectors if v is not None] == ["user-000001"]  # the other three became NULL
    np.testing.assert_allclose(merged.to_numpy(), VALID, atol=1e-6)  # the newest duplicate's was unusable
    assert clicks == 7


def test_a_deployment_onto_the_main_server_database_works_the_first_time(
    s3_env, model_dir, database_url, receiver, sample
):
    users = sorted(sample.expected.users)
    _seed_main_server(database_url, users)
    env = _env(s3_env, model_dir, database_url, receiver)
    pipeline(env, sample, shards=2)  # plans (migrating, adopting), shards, reduces: nothing fails

    types = main_server.column_types(database_url)
    assert types[("user_behavior_vectors", "behavior_vector")] == "vector"
    assert types[("place_vectors", "combined_vector")] == "vector"
    assert types[("user_behavior_vectors", "total_clicks")] == "int8"
    assert query(
        database_url,
        "SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND conrelid = 'user_behavior_vectors'::regclass",
    ) == [(1,)]  # the foreign key to users is kept
    rows = dict(query(database_url, "SELECT user_id, total_clicks FROM user_behavior_vectors"))
    unknown = {u for u in users if not known(u)}
    assert not unknown & set(rows)  # held back, not failed
    for user in users:
        if known(user):
            before = {"user-000001": 10, "user-000002": 4, "user-000005": 1}.get(user, 0)
            assert rows[user] == before + sample.expected.users[user]["click"], user  # kept and merged
    assert query(database_url, "SELECT total_likes FROM user_behavior_vectors WHERE user_id = 'user-000004'") == [
        (2 + sample.expected.users["user-000004"]["like"],)
    ]
    [(clicks,)] = query(
        database_url,
        "SELECT total_clicks FROM place_vectors WHERE place_id = '100000' AND place_category = 'restaurants'",
    )
    assert clicks == 3 + 4 + sample.expected.places[("restaurants", "100000")]["click"]  # duplicates merged
    pending = dict(query(database_url, "SELECT user_id, clicks FROM pending_user_totals"))
    assert pending == {u: sample.expected.users[u]["click"] for u in unknown}
    report = load_report(s3_client(env["AWS_REGION"]), RunLayout(env["WORK_BUCKET"], "batch-work/", env["BATCH_ID"]))
    assert report["stats"]["users_held_back"] == len(unknown)
    [notice] = receiver.delivered()
    main_server.validate_notice(orjson.loads(notice.body))
    assert notice.json["metadata"]["users_held_back"] == len(unknown)
    assert notice.json["metadata"]["envelope_batch_ids_total"] == len(report["envelope_batch_ids"]) > 0

    # they sign up; the next batch (any batch) moves their totals in and computes their vectors
    with psycopg.connect(database_url, autocommit=True) as conn:
        for user in unknown:
            conn.execute("INSERT INTO users (user_id, email) VALUES (%s, %s)", (user, f"{user}@example.com"))
    later = {**env, "BATCH_ID": f"later-{uuid.uuid4().hex[:8]}"}
    next_day = generate(actions=200, users=90, places=PLACES, seed=52, batch_size=40, start=NEXT_DAY)
    pipeline(later, next_day, shards=1)
    released = dict(query(database_url, "SELECT user_id, total_clicks FROM user_behavior_vectors"))
    assert query(database_url, "SELECT count(*) FROM pending_user_totals") == [(0,)]
    later_expected = next_day.expected
    for user in unknown:
        want = sample.expected.users[user]["click"] + later_expected.users.get(user, {"click": 0})["click"]
        assert released[user] == want, user
    assert query(
        database_url,
        "SELECT count(*) FROM user_behavior_vectors WHERE user_id = ANY(%s) AND behavior_vector IS NULL"
        " AND vector_weight > 0",
        (sorted(unknown),),
    ) == [(0,)]
    assert receiver.delivered()[-1].json["metadata"]["users_released"] == len(unknown)


def test_a_batch_looks_up_a_bounded_number_of_pending_users(s3_env, model_dir, database_url, sample, monkeypatch):
    monkeypatch.setattr(held_users, "RELEASE_CHECKS_PER_BATCH", 10)  # the reduce runs in this process
    users = sorted(sample.expected.users)
    _seed_main_server(database_url, users)
    env = _env(s3_env, model_dir, database_url)
    pipeline(env, sample, shards=1)
    unknown = sorted(u for u in users if not known(u))
    assert len(unknown) == 30 and unknown[1] == "user-000003"
    fresh = "SELECT count(*) FROM pending_user_totals WHERE checked_at = '-infinity'"
    assert query(database_url, fresh) == [(0,)]  # just held, so just checked: the back of the line
    with psycopg.connect(database_url, autocommit=True) as conn:  # all but one sign up
        for user in unknown[:1] + unknown[2:]:
            conn.execute("INSERT INTO users (user_id, email) VALUES (%s, %s)", (user, f"{user}@example.com"))
    released = []
    for day in range(4):  # batches of two known users, one of them pending until now (user-000000)
        later = {**env, "BATCH_ID": f"later-{day}-{uuid.uuid4().hex[:6]}"}
        start = NEXT_DAY + timedelta(days=day)
        pipeline(later, generate(actions=20, users=2, places=PLACES, seed=60 + day, start=start, malformed_files=0), 1)
        [(count,)] = query(
            database_url, "SELECT stats -> 'users_released' FROM batch_runs WHERE batch_id = %s", (later["BATCH_ID"],)
        )
        released.append(count)
    # ten looked up a batch, oldest check first: the one still unknown goes to the back of the line
    assert released == [9, 10, 10, 0]
    assert query(database_url, "SELECT user_id FROM pending_user_totals") == [("user-000003",)]


def test_an_account_deleted_while_the_reduce_runs_is_held_back_not_a_failed_batch(
    s3_env, model_dir, database_url, receiver, sample
):
    users = sorted(sample.expected.users)
    _seed_main_server(database_url, users)
    leaving = next(
        u for u in users if known(u) and u not in {"user-000001", "user-000002", "user-000004", "user-000005"}
    )
    env = _env(s3_env, model_dir, database_url, receiver)
    seed(env, sample)
    plan_run(env, shards=1)
    run_child(env, 0)
    with psycopg.connect(database_url) as deleting:  # the main server deletes the account, not yet committed
        deleting.execute("DELETE FROM users WHERE user_id = %s", (leaving,))
        reduce = start_module("reduce_job", env)
        wait_for(
            lambda: query(database_url, "SELECT count(*) FROM pg_locks WHERE NOT granted")[0][0] > 0,
            "the reduce waiting for the deleted account's row",
        )
        deleting.commit()
    _, err = reduce.communicate(timeout=120)
    assert reduce.returncode == 0, err[-2000:]
    assert query(database_url, "SELECT count(*) FROM user_behavior_vectors WHERE user_id = %s", (leaving,)) == [(0,)]
    assert query(database_url, "SELECT clicks FROM pending_user_totals WHERE user_id = %s", (leaving,)) == [
        (sample.expected.users[leaving]["click"],)
    ]
    [notice] = receiver.delivered()
    assert notice.json["job_status"] == "SUCCEEDED"


def test_the_main_server_reads_still_work(s3_env, model_dir, database_url, sample):
    _seed_main_server(database_url, sorted(sample.expected.users))
    pipeline(_env(s3_env, model_dir, database_url), sample, shards=1)
    with psycopg.connect(database_url) as conn:  # asyncpg without a codec: the text form
        [(text,)] = conn.execute(
            "SELECT behavior_vector::text FROM user_behavior_vectors WHERE user_id = 'user-000001'"
        ).fetchall()
    parsed = [float(x) for x in text.strip("[]").split(",")]
    assert len(parsed) == 384 and all(math.isfinite(x) for x in parsed)
    with psycopg.connect(database_url) as conn:  # with pgvector's type: a list of floats
        register_vector(conn)
        [(vector,)] = conn.execute(
            "SELECT behavior_vector FROM user_behavior_vectors WHERE user_id = 'user-000001'"
        ).fetchall()
    as_list = vector.to_list()
    assert len(as_list) == 384 and np.isfinite(as_list).all()
    assert np.allclose(as_list, parsed, atol=1e-6)
    assert not np.allclose(as_list, VALID, atol=1e-3)  # ours, not the adopted one
    # its status page counts vectors updated within a day: every user of the batch it knows
    [(fresh,)] = query(
        database_url, "SELECT count(*) FROM user_behavior_vectors WHERE vector_updated_at > now() - interval '1 day'"
    )
    [(ours,)] = query(database_url, "SELECT count(*) FROM user_behavior_vectors WHERE vector_weight > 0")
    assert fresh == ours == sum(known(user) for user in sample.expected.users)


def test_a_long_read_makes_the_migration_fail_fast_and_change_nothing(s3_env, model_dir, database_url, sample):
    _seed_main_server(database_url, sorted(sample.expected.users))
    types_before = main_server.column_types(database_url)
    with psycopg.connect(database_url) as reader:
        reader.execute("SELECT count(*) FROM place_vectors").fetchone()  # its transaction stays open
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "reduce_job", "migrate"],
            env={**__import__("os").environ, **_env(s3_env, model_dir, database_url, DB_LOCK_TIMEOUT_SECONDS="1")},
            capture_output=True,
            text=True,
            timeout=120,
            cwd=REPO,
        )
        elapsed = time.monotonic() - started
        reader.rollback()
    assert result.returncode == 1
    assert elapsed < 60
    assert "could not lock what it changes within 1 s" in result.stderr
    assert "Nothing was changed" in result.stderr
    assert main_server.column_types(database_url) == types_before
