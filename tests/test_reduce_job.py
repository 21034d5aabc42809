from __future__ import annotations

import gzip
import hashlib
import io
import re
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import replace

import numpy as np
import orjson
import psycopg
import pytest
from pgvector.psycopg import register_vector

from local_stack.moto_s3 import LOCAL_PARTIALS_SECRET
from local_stack.sample_data import Expected, SampleSet, generate
from shard_job.actions import validate
from tests.helpers import (
    REPO,
    fresh_env,
    pipeline,
    plan_around_the_ledger,
    plan_run,
    query,
    record_planned_in,
    reduce_in_process,
    run_child,
    run_module,
    seed,
    work_objects,
)
from witple_batch.s3 import s3_client
from witple_batch.schema import REDUCE_LOCK, migrate, migrations
from witple_batch.signing import sign

SECRET = "webhook-test-secret"


@pytest.fixture(scope="module")
def first_sample() -> SampleSet:
    return generate(actions=2_000, users=150, places=60, seed=11, batch_size=50)


@pytest.fixture(scope="module")
def second_sample() -> SampleSet:
    start = __import__("datetime").datetime(2025, 1, 16, 9, tzinfo=__import__("datetime").UTC)
    return generate(actions=1_500, users=150, places=60, seed=12, batch_size=50, start=start)


def _env(s3_env, model_dir, database_url, receiver=None, **extra):
    more = {"DATABASE_URL": database_url, "WEBHOOK_SECRET": SECRET, **extra}
    if receiver is not None:
        more["WEBHOOK_URL"] = receiver.url
    return fresh_env(s3_env, model_dir, **more)


def _new_batch(env: dict[str, str]) -> dict[str, str]:
    return {**env, "BATCH_ID": f"test-{uuid.uuid4().hex[:10]}"}


def _actions_of(item) -> list[dict]:
    body = gzip.decompress(item.body) if item.body[:2] == b"\x1f\x8b" else item.body
    document = orjson.loads(body)
    records = document.get("actions", [document]) if isinstance(document, dict) else document
    return [r for r in records if not isinstance(validate(r, 2**62), str)]


def assert_database_matches(url: str, expected: Expected) -> None:
    users = {
        row[0]: row[1:]
        for row in query(
            url,
            "SELECT user_id, total_clicks, total_likes, total_bookmarks, total_other, total_actions,"
            " vector_weight, click_score, like_score, bookmark_score FROM user_behavior_vectors",
        )
    }
    assert set(users) == set(expected.users)
    for uid, e in expected.users.items():
        clicks, likes, bookmarks, other, total, weight, click_s, like_s, bookmark_s = users[uid]
        assert (clicks, likes, bookmarks, other) == (e["click"], e["like"], e["bookmark"], e["other"])
        assert total == clicks + likes + bookmarks + other
        assert weight == pytest.approx(e["weight"])
        assert click_s == pytest.approx(100 * clicks / total, abs=1e-3)
        assert like_s == pytest.approx(100 * likes / total, abs=1e-3)
        assert bookmark_s == pytest.approx(100 * bookmarks / total, abs=1e-3)
    places = {
        (row[0], row[1]): row[2:]
        for row in query(
            url,
            "SELECT place_category, place_id, total_clicks, total_likes, total_bookmarks,"
            " unique_users, popularity_score, engagement_score FROM place_vectors",
        )
    }
    assert set(places) == set(expected.places)
    for key, e in expected.places.items():
        clicks, likes, bookmarks, unique, popularity, engagement = places[key]
        assert (clicks, likes, bookmarks) == (e["click"], e["like"], e["bookmark"])
        assert unique == len(e["users"])
        assert popularity == min(2 * (likes + bookmarks + clicks), 100)
        assert engagement == min(5 * (likes + bookmarks), 100)


def assert_vectors_follow_stored_content(url: str) -> None:
    """behavior_vector = sum(w_up * content_p) / sum(w_up) over the interaction table, to float32
    rounding: every shard embeds a place text to the same bytes or reuses the stored vector."""
    with psycopg.connect(url) as conn:
        register_vector(conn)
        content = {
            (c, p): v.to_numpy()
            for c, p, v in conn.execute("SELECT place_category, place_id, content_vector FROM place_vectors").fetchall()
        }
        sums: dict[str, np.ndarray] = {}
        weights: dict[str, float] = {}
        for uid, cat, pid, w in conn.execute(
            "SELECT user_id, place_category, place_id, clicks + 3 * likes + 5 * bookmarks FROM user_place_interactions"
        ).fetchall():
            sums[uid] = sums.get(uid, 0) + w * content[(cat, pid)].astype(np.float64)
            weights[uid] = weights.get(uid, 0) + w
        for uid, vector, weight in conn.execute(
            "SELECT user_id, behavior_vector, vector_weight FROM user_behavior_vectors"
        ).fetchall():
            assert weight == pytest.approx(weights[uid])
            if weight == 0:
                assert vector is None
                continue
            np.testing.assert_allclose(vector.to_numpy(), sums[uid] / weights[uid], atol=1e-5, err_msg=uid)


def user_vectors(url: str) -> dict[str, tuple[np.ndarray, float]]:
    with psycopg.connect(url) as conn:
        register_vector(conn)
        return {
            uid: (v.to_numpy().astype(np.float64), w)
            for uid, v, w in conn.execute(
                "SELECT user_id, behavior_vector, vector_weight FROM user_behavior_vectors WHERE vector_weight > 0"
            ).fetchall()
        }


def test_one_batch_matches_an_independent_recomputation(s3_env, model_dir, database_url, receiver, first_sample):
    env = _env(s3_env, model_dir, database_url, receiver)
    pipeline(env, first_sample)
    assert_database_matches(database_url, first_sample.expected)
    assert_vectors_follow_stored_content(database_url)
    ledger = query(database_url, "SELECT status, count(*) FROM processed_files GROUP BY status ORDER BY status")
    assert ledger == [
        ("processed", len(first_sample.files) - first_sample.expected.rejected_files),
        ("rejected", first_sample.expected.rejected_files),
    ]
    combined = query(
        database_url,
        "SELECT count(*) FROM place_vectors WHERE combined_vector IS NULL"
        " OR abs(vector_norm(combined_vector) - 1) > 1e-4",
    )
    assert combined == [(0,)]


@pytest.mark.parametrize("cap", ["shard", "run"])
def test_a_shard_holds_at_most_its_actions_and_the_rest_drain_in_later_runs(
    s3_env, model_dir, database_url, receiver, first_sample, cap
):
    """Files whose names understate their actions (here: 0) hold neither a shard to
    MAX_ACTIONS_PER_SHARD nor a run to its action cap by themselves: the children do. The file
    past a shard's cap, and the files after it, wait for the next plan; nothing is lost."""
    lying = SampleSet(
        [replace(f, key=re.sub(r"/batch-(\d+)-\d+-", r"/batch-\1-0-", f.key)) for f in first_sample.files],
        first_sample.expected,
    )
    if cap == "shard":  # 700 a shard, one shard
        env = _env(s3_env, model_dir, database_url, receiver, MAX_ACTIONS_PER_SHARD="700")
        shards, max_records, per_run = 1, None, 700
    else:  # 560 a run by the names: one shard (shares of at least 100,000), 700 (RUN_CAP_SLACK 1.25)
        env = _env(s3_env, model_dir, database_url, receiver)
        shards, max_records, per_run = 2, 560, 700
    seed(env, lying)
    runs = []
    while True:
        planned = plan_run(env, shards=shards, max_records=max_records)
        if not planned["shards"]:
            break
        children = [run_child(env, index) for index in range(planned["shards"])]
        reduce_in_process(env)
        (stats,) = query(database_url, "SELECT stats FROM batch_runs WHERE batch_id = %s", (env["BATCH_ID"],))[0]
        readers = [c["reader_peak_rss_mb"] for c in children]
        assert all(peak > 0 for peak in readers), readers  # also when the child stopped its reader early
        accepted = sum(c["records_accepted"] for c in children)
        deferred = sum(c["files_deferred"] for c in children)
        runs.append((planned["files"], accepted, deferred, stats["files_deferred"]))
        env = _new_batch(env)
        assert len(runs) < 10, runs
    assert len(runs) >= 3, runs  # 2,000 actions, at most 700 a run (two shards fill unevenly)
    for _files, accepted, deferred, deferred_in_stats in runs:
        assert accepted <= per_run and deferred == deferred_in_stats
    assert [deferred > 0 for _, _, deferred, _ in runs] == [True] * (len(runs) - 1) + [False]
    assert runs[1][0] == runs[0][2] and runs[2][0] == runs[1][2]  # the deferred files, and only they, come back
    assert_database_matches(database_url, first_sample.expected)
    ledger = query(database_url, "SELECT count(*) FROM processed_files")
    assert ledger == [(len(first_sample.files),)]
    notices = [(r.json["job_status"], r.json["metadata"]["files_deferred"]) for r in receiver.delivered()]
    assert notices == [("SUCCEEDED", deferred) for _, _, deferred, _ in runs]


def test_a_first_load_rebuilds_the_place_index_instead_of_inserting_into_it(s3_env, model_dir, database_url):
    many = generate(actions=6_000, users=300, places=3_000, seed=77, batch_size=120, malformed_files=0)
    assert len(many.expected.places) > 1_000
    env = _env(s3_env, model_dir, database_url, CATALOGUE_SOURCE="none")
    seed(env, many)
    for index in range(plan_run(env, shards=2)["shards"]):
        run_child(env, index)
    assert reduce_in_process(env).stats["place_index"] == "dropped"  # > 1,000 new places: built after the commit
    assert query(
        database_url,
        "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
        " WHERE c.relname = 'place_vectors_content_hnsw'",
    ) == [(True,)]
    assert_database_matches(database_url, many.expected)
    later = {**env, "BATCH_ID": "later"}
    seed(later, generate(actions=300, users=300, places=3_000, seed=78, batch_size=80))
    plan_run(later, shards=1)
    run_child(later, 0)
    assert "place_index" not in reduce_in_process(later).stats  # a few new places go in one by one


def test_an_apply_refused_after_the_bulk_index_drop_builds_the_index_again(s3_env, model_dir, database_url, postgres):
    many = generate(actions=6_000, users=300, places=3_000, seed=77, batch_size=120, malformed_files=0)
    env = _env(s3_env, model_dir, database_url, CATALOGUE_SOURCE="none")
    seed(env, many)
    holder = _new_batch(env)
    plan_run(holder, shards=1, max_files=1)  # another run holds the oldest file
    plan_around_the_ledger(env, postgres.new_database(), shards=2)  # around the claims: it has that file too
    for index in range(2):
        run_child(env, index)
    index_row = (
        "SELECT c.oid, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
        " WHERE c.relname = 'place_vectors_content_hnsw'"
    )
    [(before, _)] = query(database_url, index_row)
    refused = run_module("reduce_job", env)
    assert refused.returncode == 2
    assert "claimed by run " + holder["BATCH_ID"] in refused.stderr
    [(after, valid)] = query(database_url, index_row)
    assert valid and after != before  # dropped for the bulk apply, built again when the apply was refused
    assert query(database_url, "SELECT count(*) FROM place_vectors") == [(0,)]


def test_a_report_refused_after_the_commit_builds_the_dropped_place_index_again(
    moto, s3_env, model_dir, database_url, first_sample, monkeypatch
):
    """The run commits with the place index dropped for a bulk load, then its report PUT fails (the
    job fails, for a retry): the index is built again before the job exits, not by the retry."""
    from botocore.exceptions import ClientError

    from local_stack.fault_proxy import FaultProxy
    from reduce_job import indexes

    monkeypatch.setattr(indexes, "BULK_MIN_PLACES", 1)  # the sample's 60 new places are a bulk load
    env = _env(s3_env, model_dir, database_url, CATALOGUE_SOURCE="none")
    seed(env, first_sample)
    plan_run(env, shards=1)
    run_child(env, 0)
    index_row = (
        "SELECT c.oid, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
        " WHERE c.relname = 'place_vectors_content_hnsw'"
    )
    [(before, _)] = query(database_url, index_row)
    with FaultProxy.running(moto.endpoint, fail_keys=("report.json",)) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
        with pytest.raises(ClientError, match="PutObject"):
            reduce_in_process(env)
    assert query(database_url, "SELECT status FROM batch_runs") == [("committed",)]
    [(after, valid)] = query(database_url, index_row)
    assert valid and after != before  # dropped for the bulk apply, built again though the report failed


def test_two_batches_accumulate_and_vectors_stay_exact(s3_env, model_dir, database_url, first_sample, second_sample):
    env = _env(s3_env, model_dir, database_url)
    pipeline(env, first_sample)
    second = _new_batch(env)
    pipeline(second, second_sample)
    assert_database_matches(database_url, first_sample.expected.merge(second_sample.expected))
    assert_vectors_follow_stored_content(database_url)
    runs = query(database_url, "SELECT batch_id, status FROM batch_runs ORDER BY committed_at")
    assert runs == [(env["BATCH_ID"], "notified"), (second["BATCH_ID"], "notified")]


def test_two_batches_merge_as_exact_weighted_means(s3_env, model_dir, postgres, first_sample, second_sample):
    """Both batches into one database == (v1 * w1 + v2 * w2) / (w1 + w2) of each alone (same partials)."""
    urls = {name: postgres.new_database() for name in ("both", "first", "second")}
    env = fresh_env(s3_env, model_dir, DATABASE_URL=urls["both"])
    second = _new_batch(env)
    pipeline(env, first_sample)
    pipeline(second, second_sample)
    for run, url in ((env, urls["first"]), (second, urls["second"])):
        record_planned_in(url, run["BATCH_ID"])
        reduce_in_process({**run, "DATABASE_URL": url})
    both, one, two = (user_vectors(urls[n]) for n in ("both", "first", "second"))
    assert set(both) == set(one) | set(two)
    for uid, (vector, weight) in both.items():
        v1, w1 = one.get(uid, (np.zeros(384), 0.0))
        v2, w2 = two.get(uid, (np.zeros(384), 0.0))
        assert weight == pytest.approx(w1 + w2)
        np.testing.assert_allclose(vector, (v1 * w1 + v2 * w2) / (w1 + w2), atol=1e-5)


def test_rerunning_a_committed_batch_changes_nothing(s3_env, model_dir, database_url, receiver, first_sample):
    env = _env(s3_env, model_dir, database_url, receiver)
    pipeline(env, first_sample)
    snapshot = _every_table(database_url)
    result = run_module("reduce_job", env)
    assert result.returncode == 0, result.stderr
    assert "already committed" in result.stderr
    assert _every_table(database_url) == snapshot
    assert len(receiver.delivered()) == 1  # delivered once per committed batch, not per run


def _every_table(url: str) -> dict[str, list[tuple]]:
    """What a batch writes, row by row: users, places, interactions, the ledger, the run."""
    return {
        table: query(url, f"SELECT * FROM {table} ORDER BY {order}")
        for table, order in (
            ("user_behavior_vectors", "user_id"),
            ("place_vectors", "place_category, place_id"),
            ("user_place_interactions", "user_id, place_category, place_id"),
            ("processed_files", "key"),
            ("batch_runs", "batch_id"),
        )
    }


def test_a_batch_holding_an_already_processed_file_is_refused_whole(
    s3_env, model_dir, database_url, postgres, receiver, first_sample
):
    env = _env(s3_env, model_dir, database_url, receiver)
    seed(env, first_sample)
    overlapping = _new_batch(env)
    plan_run(env, shards=1)
    plan_around_the_ledger(overlapping, postgres.new_database(), shards=1)  # the same files
    run_child(env, 0)
    run_child(overlapping, 0)
    reduce_in_process(env)
    before = query(database_url, "SELECT sum(total_actions) FROM user_behavior_vectors")
    result = run_module("reduce_job", overlapping)
    assert result.returncode == 2
    assert "already processed or claimed by run " + env["BATCH_ID"] in result.stderr
    assert query(database_url, "SELECT sum(total_actions) FROM user_behavior_vectors") == before
    assert query(
        database_url, "SELECT count(*) FROM processed_files WHERE batch_id = %s", (overlapping["BATCH_ID"],)
    ) == [(0,)]
    failed = [r.json for r in receiver.received if r.json["batch_id"] == overlapping["BATCH_ID"]]
    assert failed[-1]["job_status"] == "FAILED"
    assert "already processed" in failed[-1]["error_message"]


def test_a_partly_overlapping_batch_is_refused_then_its_new_files_are_planned_alone(
    s3_env, model_dir, database_url, postgres
):
    env = _env(s3_env, model_dir, database_url)
    sample = generate(actions=1_200, users=60, places=25, batch_size=30, malformed_files=0, single_rate=0.0)
    keys = sorted(f.key for f in sample.files)
    assert len(keys) >= 40
    first, rest = keys[:20], keys[20:40]
    by_key = {f.key: f for f in sample.files}
    seed(env, SampleSet([by_key[k] for k in keys[:40]], sample.expected))
    a = plan_run(env, shards=1, max_files=20)  # batch A: F[0:20]
    assert a["files"] == 20
    run_child(env, 0)
    reduce_in_process(env)
    b = _new_batch(env)
    plan_around_the_ledger(b, postgres.new_database(), shards=1)  # batch B: F[0:40], half of it A's
    client = s3_client(env["AWS_REGION"])
    plan_key = f"batch-work/runs/{b['BATCH_ID']}/plan/00000.json"
    listed = orjson.loads(client.get_object(Bucket=env["WORK_BUCKET"], Key=plan_key)["Body"].read())
    assert sorted(f["key"] for f in listed["files"]) == keys[:40]
    run_child(b, 0)
    refused = run_module("reduce_job", b)
    assert refused.returncode == 2
    assert "already processed or claimed by run " + env["BATCH_ID"] in refused.stderr
    assert any(key in refused.stderr for key in first)  # the overlapping keys are named ...
    assert not any(key in refused.stderr for key in rest)  # ... and only those
    ledger = {k for (k,) in query(database_url, "SELECT key FROM processed_files")}
    assert ledger == set(first)  # nothing of F[20:40]
    c = _new_batch(env)
    planned = plan_run(c, shards=1)
    assert planned["files"] == 20
    run_child(c, 0)
    reduce_in_process(c)
    assert {k for (k,) in query(database_url, "SELECT key FROM processed_files")} == set(first) | set(rest)
    upto_40 = sum(len(_actions_of(by_key[k])) for k in keys[:40])  # parsed here, not by the jobs
    assert query(database_url, "SELECT sum(total_actions) FROM user_behavior_vectors") == [(upto_40,)]


def test_the_user_vector_index_is_built_and_used_when_asked_for(s3_env, model_dir, database_url, first_sample):
    env = _env(s3_env, model_dir, database_url, USER_VECTOR_INDEX="hnsw")
    pipeline(env, first_sample)
    [(valid,)] = query(
        database_url,
        "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
        " WHERE c.relname = 'user_behavior_vectors_hnsw'",
    )
    assert valid
    with psycopg.connect(database_url) as conn:
        conn.execute("SET enable_seqscan = off")
        plan = "\n".join(
            row[0]
            for row in conn.execute(
                "EXPLAIN SELECT user_id FROM user_behavior_vectors"
                " ORDER BY behavior_vector <=> (SELECT behavior_vector FROM user_behavior_vectors LIMIT 1) LIMIT 5"
            ).fetchall()
        )
    assert "user_behavior_vectors_hnsw" in plan
    off = {**env, "USER_VECTOR_INDEX": "none", "BATCH_ID": f"test-{uuid.uuid4().hex[:10]}"}
    pipeline(off, generate(actions=100, users=10, places=5, seed=9, batch_size=50, malformed_files=0))
    assert query(database_url, "SELECT count(*) FROM pg_class WHERE relname = 'user_behavior_vectors_hnsw'") == [(0,)]


def test_building_an_index_gives_the_connection_its_statement_budget_back(database_url):
    from reduce_job.indexes import USER_INDEX, ensure_index
    from witple_batch.database import connect

    with connect(database_url, autocommit=True) as conn:
        migrate(conn)
    with connect(database_url, autocommit=True, statement_timeout_s=7) as conn:
        assert ensure_index(conn, USER_INDEX, True) == "built"
        assert conn.execute("SHOW statement_timeout").fetchone() == ("7s",)  # not the server's default


def test_a_rebuild_waits_for_a_row_lock_only_its_lock_budget(s3_env, model_dir, database_url, first_sample):
    env = _env(s3_env, model_dir, database_url, DB_LOCK_TIMEOUT_SECONDS="1", DB_STATEMENT_TIMEOUT_SECONDS="60")
    pipeline(env, first_sample)
    with psycopg.connect(database_url) as blocker:  # the main server, holding a row for a while
        blocker.execute("SELECT 1 FROM user_behavior_vectors ORDER BY user_id LIMIT 1 FOR UPDATE")
        started = time.monotonic()
        rebuilt = run_module("reduce_job", env, "rebuild-vectors", timeout=120)
        waited = time.monotonic() - started
    assert rebuilt.returncode != 0 and "lock timeout" in rebuilt.stderr, rebuilt.stderr[-2000:]
    assert waited < 30  # DB_LOCK_TIMEOUT_SECONDS, not the statement's 60 s


@pytest.mark.parametrize("stage", ["waiting_for_the_reduce_lock", "during_the_upsert"])
def test_sigkill_mid_transaction_leaves_the_database_unchanged(
    s3_env, model_dir, database_url, first_sample, second_sample, stage
):
    env = _env(s3_env, model_dir, database_url)
    pipeline(env, first_sample)
    second = _new_batch(env)
    seed(second, second_sample)
    plan_run(second, shards=1)
    run_child(second, 0)
    before = query(database_url, "SELECT sum(total_actions), count(*) FROM user_behavior_vectors")
    blocker = psycopg.connect(database_url)
    if stage == "waiting_for_the_reduce_lock":  # staged, inside its transaction, before any write
        blocker.execute("SELECT pg_advisory_xact_lock(%s)", (REDUCE_LOCK,))
    else:  # one user's row: the reduce waits in the upsert, after interactions and places were written
        blocker.execute("SELECT 1 FROM user_behavior_vectors ORDER BY user_id LIMIT 1 FOR UPDATE")
    process = subprocess.Popen(
        [sys.executable, "-m", "reduce_job"],
        env={**__import__("os").environ, **second},
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            waiting = query(
                database_url,
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'reduce_job'"
                " AND wait_event_type = 'Lock'",
            )
            if waiting[0][0]:
                break
            time.sleep(0.2)
        else:
            pytest.fail("the reduce never reached the locked row")
    finally:
        process.kill()
        process.wait()
        blocker.rollback()
        blocker.close()
    assert query(database_url, "SELECT sum(total_actions), count(*) FROM user_behavior_vectors") == before
    assert query(database_url, "SELECT count(*) FROM processed_files WHERE batch_id = %s", (second["BATCH_ID"],)) == [
        (0,)
    ]
    result = run_module("reduce_job", second)
    assert result.returncode == 0, result.stderr
    assert_database_matches(database_url, first_sample.expected.merge(second_sample.expected))


def test_concurrent_reduces_of_disjoint_batches_give_exact_totals(
    s3_env, model_dir, database_url, first_sample, second_sample
):
    env = _env(s3_env, model_dir, database_url)
    a = {**env, "S3_PREFIX": "part-a/", "BATCH_ID": f"a-{uuid.uuid4().hex[:8]}"}
    b = {**env, "S3_PREFIX": "part-b/", "BATCH_ID": f"b-{uuid.uuid4().hex[:8]}"}
    seed(a, generate(actions=2_000, users=150, places=60, seed=11, batch_size=50, prefix="part-a/"))
    seed(
        b,
        generate(
            actions=1_500,
            users=150,
            places=60,
            seed=12,
            batch_size=50,
            prefix="part-b/",
            start=__import__("datetime").datetime(2025, 1, 16, 9, tzinfo=__import__("datetime").UTC),
        ),
    )
    for batch in (a, b):
        plan_run(batch, shards=1)
        run_child(batch, 0)
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "reduce_job"],
            env={**__import__("os").environ, **batch},
            cwd=REPO,
            stderr=subprocess.PIPE,
            text=True,
        )
        for batch in (a, b)
    ]
    try:
        for process in processes:
            _, err = process.communicate(timeout=300)
            assert process.returncode == 0, err
    finally:
        for process in processes:
            process.kill()
    assert_database_matches(database_url, first_sample.expected.merge(second_sample.expected))
    assert_vectors_follow_stored_content(database_url)


def test_webhook_carries_the_contract_and_a_valid_signature(s3_env, model_dir, database_url, receiver, first_sample):
    env = _env(s3_env, model_dir, database_url, receiver, AWS_BATCH_JOB_ID="job-123", AWS_BATCH_JOB_NAME="reduce")
    pipeline(env, first_sample)
    [delivery] = receiver.delivered()
    body = delivery.json
    assert delivery.signature_valid(SECRET)
    assert set(body) == {
        "job_id",
        "job_name",
        "job_status",
        "batch_id",
        "processed_records",
        "processing_time_seconds",
        "s3_input_path",
        "error_message",
        "metadata",
    }
    assert body["job_id"] == "job-123"
    assert body["job_name"] == "reduce"
    assert body["job_status"] == "SUCCEEDED"
    assert body["batch_id"] == env["BATCH_ID"]
    assert body["processed_records"] == first_sample.expected.actions
    assert isinstance(body["processing_time_seconds"], float)
    assert body["s3_input_path"] == f"s3://{env['S3_BUCKET']}/user-actions/"
    assert body["error_message"] is None
    assert body["metadata"]["users"] == len(first_sample.expected.users)
    assert body["metadata"]["rejects"] == first_sample.expected.rejected_records
    assert body["metadata"]["shard_count"] == 2
    assert not delivery.signature_valid("another-secret")


def test_webhook_500_500_200_is_delivered_once(s3_env, model_dir, database_url, receiver, first_sample):
    receiver.script[:] = [500, 503, 200]
    env = _env(s3_env, model_dir, database_url, receiver, WEBHOOK_BACKOFF_SECONDS="0.01")
    pipeline(env, SampleSet(first_sample.files[:5], first_sample.expected))
    assert [r.status for r in receiver.received] == [500, 503, 200]
    assert len(receiver.delivered()) == 1
    assert query(database_url, "SELECT status, webhook_status, webhook_attempts FROM batch_runs") == [
        ("notified", "delivered", 3)
    ]


def test_webhook_4xx_is_not_retried(s3_env, model_dir, database_url, receiver, first_sample):
    receiver.script[:] = [400]
    env = _env(s3_env, model_dir, database_url, receiver)
    pipeline(env, SampleSet(first_sample.files[:3], first_sample.expected))
    assert [r.status for r in receiver.received] == [400]
    assert query(database_url, "SELECT webhook_status, webhook_error FROM batch_runs") == [("failed", "HTTP 400")]


def test_a_dead_receiver_leaves_the_data_committed(s3_env, model_dir, database_url, first_sample, dead_port):
    env = _env(
        s3_env,
        model_dir,
        database_url,
        WEBHOOK_URL=f"http://127.0.0.1:{dead_port}/hook",
        WEBHOOK_ATTEMPTS="2",
        WEBHOOK_TIMEOUT_SECONDS="1",
    )
    seed(env, SampleSet(first_sample.files[:4], first_sample.expected))
    plan_run(env, shards=1)
    run_child(env, 0)
    result = run_module("reduce_job", env)
    assert result.returncode == 0, result.stderr
    assert "webhook not delivered" in result.stderr
    [(status, notice, webhook_status)] = query(database_url, "SELECT status, notice, webhook_status FROM batch_runs")
    assert (status, notice, webhook_status) == ("notified", "SUCCEEDED", "failed")  # its failure recorded
    expected = Expected()
    for item in first_sample.files[:4]:
        for action in _actions_of(item):
            expected.add(action)
    assert_database_matches(database_url, expected)


def test_a_shard_failing_on_its_last_attempt_sends_failed(
    moto, s3_env, model_dir, database_url, receiver, first_sample
):
    from local_stack.fault_proxy import FaultProxy

    env = _env(s3_env, model_dir, database_url, receiver, JOB_ATTEMPTS="3")
    seed(env, SampleSet(first_sample.files[:3], first_sample.expected))
    plan_run(env, shards=1)
    with FaultProxy.running(moto.endpoint, fail_keys=(first_sample.files[0].key,)) as proxy:
        broken = {
            **env,
            "AWS_ENDPOINT_URL": proxy.url,
            "AWS_MAX_ATTEMPTS": "2",
        }  # that object answers 500, whatever the retries
        early = run_module("shard_job", {**broken, "AWS_BATCH_JOB_ATTEMPT": "1"})
        assert early.returncode == 1
        assert receiver.received == []  # Batch will retry: nothing to report yet
        assert query(database_url, "SELECT status FROM batch_runs") == [("planned",)]
        last = run_module("shard_job", {**broken, "AWS_BATCH_JOB_ATTEMPT": "3"})
    assert last.returncode == 1
    [notice] = receiver.received
    assert notice.signature_valid(SECRET)
    assert notice.json["job_status"] == "FAILED"
    assert first_sample.files[0].key in notice.json["error_message"]
    assert query(database_url, "SELECT status, notice FROM batch_runs") == [("failed", "FAILED")]
    assert query(database_url, "SELECT count(*) FROM file_claims") == [(0,)]  # its files can be planned again


def test_missing_success_markers_are_named(s3_env, model_dir, database_url, receiver, first_sample):
    env = _env(s3_env, model_dir, database_url, receiver)
    seed(env, first_sample)
    plan_run(env, shards=3)
    run_child(env, 1)
    result = run_module("reduce_job", env)
    assert result.returncode == 2  # the same partials fail the same way on every attempt
    assert "shards without _SUCCESS.json (not finished or failed): [0, 2]" in result.stderr
    assert query(database_url, "SELECT count(*) FROM user_behavior_vectors") == [(0,)]
    assert receiver.received[-1].json["job_status"] == "FAILED"


def _two_shards_done(env: dict[str, str], sample: SampleSet) -> None:
    """The sample planned into two shards, both children run: the reduce's input is on S3."""
    seed(env, sample)
    plan_run(env, shards=2)
    for index in range(2):
        run_child(env, index)


def _reduce_after_changing(env, sample, name: str, change) -> subprocess.CompletedProcess[str]:
    """Two shards run, shard 1's `name` is rewritten on S3 by `change`, then the reduce runs."""
    _two_shards_done(env, sample)
    key = f"batch-work/runs/{env['BATCH_ID']}/shards/00001/{name}"
    client = s3_client(env["AWS_REGION"])
    data = client.get_object(Bucket=env["WORK_BUCKET"], Key=key)["Body"].read()
    client.put_object(Bucket=env["WORK_BUCKET"], Key=key, Body=change(data))
    return run_module("reduce_job", env)


def test_a_tampered_npy_on_s3_is_refused_and_nothing_applied(s3_env, model_dir, database_url, first_sample):
    def flip_last_bit(data: bytes) -> bytes:  # one bit: one user's click count
        return data[:-1] + bytes([data[-1] ^ 1])

    env = _env(s3_env, model_dir, database_url)
    result = _reduce_after_changing(env, first_sample, "pairs.counts.npy", flip_last_bit)
    assert result.returncode == 2
    assert "corrupt partials in shards [1]" in result.stderr
    assert "checksum mismatch for pairs.counts.npy" in result.stderr
    assert query(database_url, "SELECT count(*) FROM processed_files") == [(0,)]


def test_shards_from_two_models_are_refused_and_nothing_applied(s3_env, model_dir, database_url, first_sample):
    def other_export(data: bytes) -> bytes:  # as if shard 1 ran an image with another model export
        return orjson.dumps(sign({**orjson.loads(data), "content_model": "f" * 64}, LOCAL_PARTIALS_SECRET.encode()))

    env = _env(s3_env, model_dir, database_url)
    result = _reduce_after_changing(env, first_sample, "_SUCCESS.json", other_export)
    assert result.returncode == 2
    assert "shards disagree on what made their content vectors" in result.stderr
    assert query(database_url, "SELECT count(*) FROM place_vectors") == [(0,)]


@pytest.mark.parametrize("signature", ["kept", "absent", "another key"])
def test_a_forged_partial_without_the_key_is_refused_and_nothing_applied(
    s3_env, model_dir, database_url, first_sample, signature
):
    env = _env(s3_env, model_dir, database_url)
    _two_shards_done(env, first_sample)
    client = s3_client(env["AWS_REGION"])
    prefix = f"batch-work/runs/{env['BATCH_ID']}/shards/00001/"
    stored = client.get_object(Bucket=env["WORK_BUCKET"], Key=prefix + "pairs.counts.npy")["Body"].read()
    counts = np.load(io.BytesIO(stored))
    counts[0, 0] += 1_000  # a thousand clicks nobody made
    forged = io.BytesIO()
    np.save(forged, counts)
    client.put_object(Bucket=env["WORK_BUCKET"], Key=prefix + "pairs.counts.npy", Body=forged.getvalue())
    marker = orjson.loads(client.get_object(Bucket=env["WORK_BUCKET"], Key=prefix + "_SUCCESS.json")["Body"].read())
    marker["files"]["pairs.counts.npy"] = hashlib.sha256(forged.getvalue()).hexdigest()  # the checksum agrees
    if signature == "absent":
        marker.pop("hmac")
    elif signature == "another key":
        marker = sign(marker, b"a key the forger made up, long enough")
    client.put_object(Bucket=env["WORK_BUCKET"], Key=prefix + "_SUCCESS.json", Body=orjson.dumps(marker))
    result = run_module("reduce_job", env)
    assert result.returncode == 2, result.stderr
    named = f"s3://{env['WORK_BUCKET']}/{prefix}_SUCCESS.json"
    assert f"{named} {'is not signed' if signature == 'absent' else 'has a wrong signature'}" in result.stderr
    assert query(database_url, "SELECT count(*) FROM processed_files") == [(0,)]
    assert query(database_url, "SELECT count(*) FROM user_place_interactions") == [(0,)]


def test_a_genuine_partial_of_another_run_copied_into_this_one_is_refused(s3_env, model_dir, database_url):
    env = _env(s3_env, model_dir, database_url)
    sample = generate(actions=600, users=40, places=20, batch_size=30, malformed_files=0)
    files = sorted(sample.files, key=lambda f: f.key)
    seed(env, SampleSet(files[:8], sample.expected))
    plan_run(env, shards=1)
    run_child(env, 0)  # run A: signed with the run key, as genuine as partials get
    other = _new_batch(env)
    seed(other, SampleSet(files[8:], sample.expected))
    plan_run(other, shards=1)
    run_child(other, 0)
    client = s3_client(env["AWS_REGION"])
    source = f"batch-work/runs/{env['BATCH_ID']}/shards/00000/"
    target = f"batch-work/runs/{other['BATCH_ID']}/shards/00000/"
    for key, data in work_objects(env, source).items():  # A's partial replayed as B's shard 0
        client.put_object(Bucket=env["WORK_BUCKET"], Key=target + key[len(source) :], Body=data)
    result = run_module("reduce_job", other)
    assert result.returncode == 2
    assert f"{target}_SUCCESS.json is the marker of run {env['BATCH_ID']!r} shard 0" in result.stderr
    assert query(database_url, "SELECT count(*) FROM processed_files") == [(0,)]


def test_a_shard_plan_rewritten_after_planning_is_refused_by_its_child(s3_env, model_dir, database_url, first_sample):
    env = _env(s3_env, model_dir, database_url)
    seed(env, first_sample)
    plan_run(env, shards=2)
    client = s3_client(env["AWS_REGION"])
    key = f"batch-work/runs/{env['BATCH_ID']}/plan/00000.json"
    plan = orjson.loads(client.get_object(Bucket=env["WORK_BUCKET"], Key=key)["Body"].read())
    plan["files"] = plan["files"][:1]  # the other files would never be read, yet marked processed
    client.put_object(Bucket=env["WORK_BUCKET"], Key=key, Body=orjson.dumps(plan))
    child = run_module("shard_job", {**env, "AWS_BATCH_JOB_ARRAY_INDEX": "0", "JOB_ATTEMPTS": "9"})
    assert child.returncode == 2
    assert f"s3://{env['WORK_BUCKET']}/{key} has a wrong signature" in child.stderr
    assert not any("/shards/00000/" in k for k in work_objects(env))


def test_a_manifest_rewritten_after_planning_is_refused_by_the_reduce(s3_env, model_dir, database_url, first_sample):
    env = _env(s3_env, model_dir, database_url)
    _two_shards_done(env, first_sample)
    client = s3_client(env["AWS_REGION"])
    manifest_key = f"batch-work/runs/{env['BATCH_ID']}/manifest.json"
    manifest = orjson.loads(client.get_object(Bucket=env["WORK_BUCKET"], Key=manifest_key)["Body"].read())
    client.put_object(Bucket=env["WORK_BUCKET"], Key=manifest_key, Body=orjson.dumps({**manifest, "files": 1}))
    reduce = run_module("reduce_job", {**env, "JOB_ATTEMPTS": "9"})
    assert reduce.returncode == 2
    assert f"s3://{env['WORK_BUCKET']}/{manifest_key} has a wrong signature" in reduce.stderr
    assert query(database_url, "SELECT count(*) FROM processed_files") == [(0,)]


def test_sql_looking_ids_are_stored_verbatim(s3_env, model_dir, database_url):
    from local_stack.sample_data import SampleFile

    hostile = "x'); DROP TABLE user_behavior_vectors; --"
    actions = [
        {
            "user_id": hostile,
            "place_id": "1; DELETE FROM place_vectors",
            "place_category": "nature",
            "action_type": "like",
        }
    ]
    key = "user-actions/year=2025/month=01/day=01/hour=00/batch-1-1-bbbbbbbb.json"
    env = _env(s3_env, model_dir, database_url)
    pipeline(env, SampleSet([SampleFile(key, orjson.dumps({"actions": actions}))], Expected()), shards=1)
    assert query(database_url, "SELECT user_id, total_likes FROM user_behavior_vectors") == [(hostile, 1)]
    assert query(database_url, "SELECT place_id FROM place_vectors") == [("1; DELETE FROM place_vectors",)]


def test_missing_database_url_is_a_configuration_error(s3_env, model_dir):
    env = fresh_env(s3_env, model_dir)
    result = run_module("reduce_job", env)
    assert result.returncode == 2
    assert "DATABASE_URL is required" in result.stderr


def test_concurrent_migrations_apply_once(database_url):
    """Three jobs start at once: held on the migration lock until pg_locks shows all three waiting."""
    from witple_batch.schema import MIGRATION_LOCK

    errors = []

    def migrate_once() -> None:
        try:
            with psycopg.connect(database_url, autocommit=True) as conn:
                migrate(conn)
        except Exception as exc:  # noqa: BLE001 - collected for the assertion below
            errors.append(exc)

    waiting = (
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        " AND ((classid::bigint << 32) | objid::bigint) = %s"
    )
    threads = [threading.Thread(target=migrate_once) for _ in range(3)]
    with psycopg.connect(database_url) as blocker:
        blocker.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 60
        while query(database_url, waiting, (MIGRATION_LOCK,)) != [(3,)]:
            if time.monotonic() > deadline:
                pytest.fail("the three migrations never waited on the lock together")
            time.sleep(0.05)
        blocker.rollback()
    for thread in threads:
        thread.join()
    assert errors == []
    shipped = [(m.version,) for m in migrations()]
    assert len(shipped) >= 7
    assert query(database_url, "SELECT version FROM schema_migrations ORDER BY version") == shipped
