"""The run's state machine on real services: claims, leases, quarantine, notices that follow states,
readers never blocked. Concurrency is forced (a blocker holds the lock until pg_locks shows the
waiters), not hoped for; processes are killed at chosen points."""

from __future__ import annotations

import json
import signal
import time
import uuid

import orjson
import psycopg
import pytest

from local_stack.fault_proxy import FaultProxy
from local_stack.sample_data import Expected, SampleFile, SampleSet, generate
from tests.helpers import (
    advisory_waiters,
    fresh_env,
    plan_run,
    query,
    reduce_in_process,
    run_child,
    run_module,
    seed,
    start_module,
    wait_for,
    work_objects,
)
from tests.test_reduce_job import assert_database_matches
from witple_batch.schema import PLAN_LOCK, REDUCE_LOCK

SECRET = "lifecycle-secret"


@pytest.fixture(scope="module")
def sample() -> SampleSet:
    return generate(actions=1_200, users=100, places=40, seed=31, batch_size=30, malformed_files=0)


def _env(s3_env, model_dir, database_url, receiver=None, **extra):
    more = {"DATABASE_URL": database_url, "WEBHOOK_SECRET": SECRET, "WEBHOOK_ATTEMPTS": "2", **extra}
    if receiver is not None:
        more["WEBHOOK_URL"] = receiver.url
    return fresh_env(s3_env, model_dir, **more)


def _batch(env: dict[str, str], **extra: str) -> dict[str, str]:
    return {**env, "BATCH_ID": f"b-{uuid.uuid4().hex[:10]}", **extra}


def _sharded(env: dict[str, str], files: list[SampleFile], sample: SampleSet) -> None:
    """Seeded, planned as one shard and that shard run: ready for the reduce."""
    seed(env, SampleSet(files, sample.expected))
    plan_run(env, shards=1)
    run_child(env, 0)


def _expected_of(files: list[SampleFile]) -> Expected:
    from tests.test_reduce_job import _actions_of

    expected = Expected()
    for item in files:
        for action in _actions_of(item):
            expected.add(action)
    return expected


def test_two_planners_at_once_claim_disjoint_files(s3_env, model_dir, database_url, sample):
    env = _env(s3_env, model_dir, database_url)
    seed(env, sample)
    first, second = _batch(env), _batch(env)
    plan_run(_batch(env), shards=1, max_files=1)  # migrates the schema; takes the oldest file
    with psycopg.connect(database_url) as blocker:
        blocker.execute("SELECT pg_advisory_xact_lock(%s)", (PLAN_LOCK,))
        planners = [
            start_module("coordinator", b, "plan", "--shards", "1", "--max-files", "10") for b in (first, second)
        ]
        wait_for(lambda: advisory_waiters(database_url, PLAN_LOCK) == 2, "both planners waiting on the plan lock")
        blocker.rollback()
    outputs = [json.loads(p.communicate(timeout=120)[0]) for p in planners]
    assert [o["files"] for o in outputs] == [10, 10]
    claimed = {
        b["BATCH_ID"]: {
            k for (k,) in query(database_url, "SELECT key FROM file_claims WHERE batch_id = %s", (b["BATCH_ID"],))
        }
        for b in (first, second)
    }
    assert claimed[first["BATCH_ID"]].isdisjoint(claimed[second["BATCH_ID"]])
    assert len(claimed[first["BATCH_ID"]] | claimed[second["BATCH_ID"]]) == 20


def test_a_planner_during_a_run_in_flight_leaves_its_files_out(s3_env, model_dir, database_url, sample):
    env = _env(s3_env, model_dir, database_url)
    older, newer = sample.files[:20], sample.files[20:]
    seed(env, SampleSet(older, sample.expected))
    in_flight = _batch(env)
    assert plan_run(in_flight, shards=1)["files"] == 20
    seed(env, SampleSet(newer, sample.expected))
    later = _batch(env)
    assert plan_run(later, shards=1)["files"] == len(newer)  # only what no run holds
    for batch in (in_flight, later):
        run_child(batch, 0)
        reduce_in_process(batch)
    assert_database_matches(database_url, sample.expected)
    assert plan_run(_batch(env), shards=1)["files"] == 0
    assert query(database_url, "SELECT count(*) FROM file_claims") == [(0,)]  # released on commit


def test_an_abandoned_run_frees_its_files_and_cannot_commit_late(s3_env, model_dir, database_url, receiver, sample):
    env = _env(s3_env, model_dir, database_url, receiver)
    seed(env, SampleSet(sample.files[:10], sample.expected))
    abandoned = _batch(env)
    plan_run(abandoned, shards=1)
    run_child(abandoned, 0)
    with psycopg.connect(database_url, autocommit=True) as conn:  # as if its lease ran out
        conn.execute("UPDATE batch_runs SET lease_expires_at = now() - interval '1 second'")
    retry = _batch(env)
    assert plan_run(retry, shards=1)["files"] == 10
    assert query(
        database_url, "SELECT status, error FROM batch_runs WHERE batch_id = %s", (abandoned["BATCH_ID"],)
    ) == [("failed", "abandoned: the lease expired before the run committed")]
    late = run_module("reduce_job", abandoned)
    assert late.returncode == 2
    assert "was recorded failed" in late.stderr
    assert query(database_url, "SELECT count(*) FROM processed_files") == [(0,)]
    run_child(retry, 0)
    reduce_in_process(retry)
    assert_database_matches(database_url, _expected_of(sample.files[:10]))
    statuses = sorted((r.json["batch_id"], r.json["job_status"]) for r in receiver.received)
    assert statuses == sorted([(abandoned["BATCH_ID"], "FAILED"), (retry["BATCH_ID"], "SUCCEEDED")])


def test_a_dead_receiver_holds_planning_back_for_one_notice_and_leaves_the_rest_owed(
    s3_env, model_dir, database_url, dead_port, sample, monkeypatch
):
    """Four abandoned runs to tell, each notice 2 s of pauses at a refused port: with a 0.5 s budget
    the planner sends one, plans, and leaves three recorded failed without a notice for the next
    coordinator (all four would take 8 s)."""
    from coordinator import settle

    webhook = {"WEBHOOK_URL": f"http://127.0.0.1:{dead_port}/hook", "WEBHOOK_BACKOFF_SECONDS": "2"}
    env = _env(s3_env, model_dir, database_url, **webhook)  # WEBHOOK_ATTEMPTS 2: one pause of 2 s
    seed(env, SampleSet(sample.files[:5], sample.expected))
    abandoned = [_batch(env) for _ in range(4)]
    for batch in abandoned:
        assert plan_run(batch, shards=1, max_files=1)["files"] == 1
    with psycopg.connect(database_url, autocommit=True) as conn:  # as if their leases ran out
        conn.execute("UPDATE batch_runs SET lease_expires_at = now() - interval '1 second'")
    monkeypatch.setattr(settle, "NOTICES_BUDGET_SECONDS", 0.5)
    started = time.monotonic()
    assert plan_run(_batch(env), shards=1)["files"] == 5  # the four freed files and the fifth
    assert time.monotonic() - started < 6.0
    ids = tuple(batch["BATCH_ID"] for batch in abandoned)
    rows = query(database_url, "SELECT status, notice FROM batch_runs WHERE batch_id = ANY(%s)", (list(ids),))
    assert sorted(rows, key=str) == sorted([("failed", "FAILED")] + [("failed", None)] * 3, key=str)


def test_a_planner_killed_before_its_commit_holds_nothing(moto, s3_env, model_dir, database_url, sample):
    env = _env(s3_env, model_dir, database_url)
    seed(env, SampleSet(sample.files[:10], sample.expected))
    plan_run(_batch(env), shards=1, max_files=1)  # schema in place
    batch = _batch(env)
    with FaultProxy.running(moto.endpoint, hang_when=lambda m, path: m == "PUT" and "manifest.json" in path) as proxy:
        planner = start_module("coordinator", {**batch, "AWS_ENDPOINT_URL": proxy.url}, "plan", "--shards", "2")
        wait_for(proxy.hung.is_set, "the planner writing its manifest")
        planner.send_signal(signal.SIGKILL)
        planner.wait()
    assert query(database_url, "SELECT count(*) FROM file_claims WHERE batch_id = %s", (batch["BATCH_ID"],)) == [(0,)]
    assert query(database_url, "SELECT count(*) FROM batch_runs WHERE batch_id = %s", (batch["BATCH_ID"],)) == [(0,)]
    orphans = work_objects(batch, f"batch-work/runs/{batch['BATCH_ID']}/plan/")
    assert len(orphans) == 2  # the shard lists it wrote before dying
    again = plan_run(batch, shards=2)  # the same BATCH_ID: the orphans are replaced, create-only
    assert again["files"] == 9


def test_notices_follow_the_attempts_of_a_failing_reduce(moto, s3_env, model_dir, database_url, receiver, sample):
    env = _env(s3_env, model_dir, database_url, receiver, JOB_ATTEMPTS="3")
    _sharded(env, sample.files[:6], sample)
    with FaultProxy.running(moto.endpoint, fail_keys=("pairs.counts.npy",)) as proxy:
        faulty = {**env, "AWS_ENDPOINT_URL": proxy.url, "AWS_MAX_ATTEMPTS": "2"}
        for attempt in ("1", "2"):
            result = run_module("reduce_job", {**faulty, "AWS_BATCH_JOB_ATTEMPT": attempt})
            assert result.returncode == 1, result.stderr[-2000:]
            assert "failure will be retried by Batch; no notice sent" in result.stderr
        assert receiver.received == []
        last = run_module("reduce_job", {**faulty, "AWS_BATCH_JOB_ATTEMPT": "3"})
        assert last.returncode == 1
    [notice] = receiver.received
    assert notice.json["job_status"] == "FAILED" and notice.signature_valid(SECRET)
    assert query(database_url, "SELECT status, notice FROM batch_runs") == [("failed", "FAILED")]
    assert query(database_url, "SELECT count(*) FROM file_claims") == [(0,)]


def test_a_reduce_failing_after_its_commit_sends_succeeded_never_failed(
    moto, s3_env, model_dir, database_url, receiver, sample
):
    env = _env(s3_env, model_dir, database_url, receiver, JOB_ATTEMPTS="3")
    _sharded(env, sample.files[:6], sample)
    with FaultProxy.running(moto.endpoint, fail_keys=("report.json",)) as proxy:
        early = run_module(
            "reduce_job", {**env, "AWS_ENDPOINT_URL": proxy.url, "AWS_MAX_ATTEMPTS": "2", "AWS_BATCH_JOB_ATTEMPT": "1"}
        )
        assert early.returncode == 1
        assert receiver.received == []  # Batch retries: the retry will send SUCCEEDED
        assert query(database_url, "SELECT status, notice FROM batch_runs") == [("committed", None)]
        last = run_module(
            "reduce_job", {**env, "AWS_ENDPOINT_URL": proxy.url, "AWS_MAX_ATTEMPTS": "2", "AWS_BATCH_JOB_ATTEMPT": "3"}
        )
    assert last.returncode == 1
    # the data is committed: FAILED would contradict the database, and no later job would say SUCCEEDED
    [notice] = receiver.received
    assert notice.json["job_status"] == "SUCCEEDED"
    assert notice.json["processed_records"] == _expected_of(sample.files[:6]).actions
    assert query(database_url, "SELECT status, notice FROM batch_runs") == [("notified", "SUCCEEDED")]
    assert run_module("reduce_job", env).returncode == 0
    assert len(receiver.received) == 1
    assert_database_matches(database_url, _expected_of(sample.files[:6]))


def test_a_reduce_killed_between_commit_and_notice_is_told_by_a_later_plan_once(
    moto, s3_env, model_dir, database_url, receiver, sample
):
    env = _env(s3_env, model_dir, database_url, receiver)
    _sharded(env, sample.files[:6], sample)
    with FaultProxy.running(moto.endpoint, hang_when=lambda m, path: m == "PUT" and "report.json" in path) as proxy:
        reduce = start_module("reduce_job", {**env, "AWS_ENDPOINT_URL": proxy.url})
        wait_for(proxy.hung.is_set, "the reduce writing its report, after the commit")
        reduce.send_signal(signal.SIGKILL)  # the timeout's SIGKILL: no notice from this job
        reduce.wait()
    assert query(database_url, "SELECT status, notice FROM batch_runs") == [("committed", None)]
    assert plan_run(_batch(env), shards=1)["shards"] == 0
    assert receiver.received == []  # within the quiet period the job may still be sending it
    with psycopg.connect(database_url, autocommit=True) as conn:  # ... which has now passed
        conn.execute("UPDATE batch_runs SET committed_at = committed_at - interval '11 minutes'")
    for _ in range(2):
        plan_run(_batch(env), shards=1)
    [notice] = receiver.received
    assert (notice.json["batch_id"], notice.json["job_status"]) == (env["BATCH_ID"], "SUCCEEDED")
    assert notice.json["metadata"]["already_committed"] is True and notice.signature_valid(SECRET)
    assert query(database_url, "SELECT status, notice FROM batch_runs") == [("notified", "SUCCEEDED")]
    report = orjson.loads(
        work_objects(env, f"batch-work/runs/{env['BATCH_ID']}/report.json")[
            f"batch-work/runs/{env['BATCH_ID']}/report.json"
        ]
    )  # the reduce died before writing it: the planner wrote it from the database
    assert (
        report["written_by"] == "planner"
        and report["stats"]["records_accepted"] == _expected_of(sample.files[:6]).actions
    )
    assert len(report["envelope_batch_ids"]) == 6 == notice.json["metadata"]["envelope_batch_ids_total"]


def test_a_broken_setting_on_50_children_sends_one_failed(s3_env, model_dir, database_url, receiver, sample):
    env = _env(s3_env, model_dir, database_url, receiver, MAX_RECORDS_PER_FILE="lots")
    seed(env, SampleSet(sample.files[:2], sample.expected))
    plan_run(env, shards=1)
    children = []
    for index in range(50):
        children.append(start_module("shard_job", {**env, "AWS_BATCH_JOB_ARRAY_INDEX": str(index)}))
        if len(children) % 10 == 0:
            for child in children[-10:]:
                child.communicate(timeout=120)
    assert {child.returncode for child in children} == {2}
    [notice] = receiver.received
    assert notice.json["job_status"] == "FAILED"
    assert "MAX_RECORDS_PER_FILE must be an integer" in notice.json["error_message"]
    assert query(database_url, "SELECT status, notice FROM batch_runs") == [("failed", "FAILED")]


def test_a_child_killed_between_failing_its_run_and_its_notice_is_told_by_a_later_plan_once(
    s3_env, model_dir, database_url, receiver, sample
):
    """The move to failed is recorded, then the child dies while its FAILED is in flight: the
    run stays failed and owes its notice, which the next coordinator sends, once."""
    receiver.script[:] = [0]  # the first delivery hangs until the child is killed
    env = _env(s3_env, model_dir, database_url, receiver, MAX_RECORDS_PER_FILE="lots", JOB_ATTEMPTS="1")
    seed(env, SampleSet(sample.files[:2], sample.expected))
    plan_run(env, shards=1)
    child = start_module("shard_job", {**env, "WEBHOOK_TIMEOUT_SECONDS": "600"})
    try:
        wait_for(receiver.hanging.is_set, "the child sending FAILED, after recording its run failed")
    finally:
        child.kill()
        child.wait()
    assert query(database_url, "SELECT status, notice FROM batch_runs") == [("failed", None)]
    with psycopg.connect(database_url, autocommit=True) as conn:  # past the quiet period a job may still send in
        conn.execute("UPDATE batch_runs SET failed_at = failed_at - interval '11 minutes'")
    for _ in range(2):
        plan_run(_batch(env), shards=1)
    [_, notice] = receiver.received
    assert (notice.json["batch_id"], notice.json["job_status"]) == (env["BATCH_ID"], "FAILED")
    assert "MAX_RECORDS_PER_FILE must be an integer" in notice.json["error_message"]
    assert query(database_url, "SELECT status, notice FROM batch_runs WHERE batch_id = %s", (env["BATCH_ID"],)) == [
        ("failed", "FAILED")
    ]


def test_a_file_over_the_size_limit_is_quarantined_until_released(s3_env, model_dir, database_url, sample):
    big_key = "user-actions/year=2025/month=01/day=15/hour=14/batch-1-1-bigbig00.json"
    action = {"user_id": "user-big", "place_id": "1", "place_category": "nature", "action_type": "like"}
    big = SampleFile(big_key, orjson.dumps({"actions": [action], "pad": "x" * (1 << 20)}))
    env = _env(s3_env, model_dir, database_url, MAX_OBJECT_MB="1")
    normal = sample.files[:8]
    seed(env, SampleSet([*normal, big], sample.expected))
    plan_run(env, shards=1)
    metrics = run_child(env, 0)
    assert metrics["files_quarantined"] == 1
    reduce_in_process(env)
    assert_database_matches(database_url, _expected_of(normal))  # the run completed for every other file
    [(status, reason)] = query(database_url, "SELECT status, reason FROM processed_files WHERE key = %s", (big_key,))
    assert status == "quarantined" and "exceeds the 1048576-byte limit (not read)" in reason
    listed = run_module("coordinator", env, "quarantine", "--list")
    assert [json.loads(line)["key"] for line in listed.stdout.splitlines()] == [big_key]
    assert plan_run(_batch(env), shards=1)["files"] == 0  # skipped by later plans
    released = run_module("coordinator", env, "quarantine", "--release", big_key)
    assert released.returncode == 0, released.stderr
    again = _batch(env, MAX_OBJECT_MB="4")  # the operator raised the limit
    assert plan_run(again, shards=1)["files"] == 1
    run_child(again, 0)
    reduce_in_process(again)
    assert query(database_url, "SELECT total_likes FROM user_behavior_vectors WHERE user_id = 'user-big'") == [(1,)]
    assert run_module("coordinator", env, "quarantine", "--release", big_key).returncode == 2


def test_a_file_that_stops_two_attempts_is_quarantined_by_the_third(moto, s3_env, model_dir, database_url, sample):
    env = _env(s3_env, model_dir, database_url)
    files = sample.files[:8]
    seed(env, SampleSet(files, sample.expected))
    plan_run(env, shards=1)
    poison = files[5].key
    # attempt 1 died without a trace (out of memory); attempt 2 notes each file and dies on the poison one
    hang = FaultProxy.running(moto.endpoint, hang_when=lambda m, path: m == "GET" and poison.split("/")[-1] in path)
    with hang as proxy:
        child = start_module("shard_job", {**env, "AWS_ENDPOINT_URL": proxy.url, "AWS_BATCH_JOB_ATTEMPT": "2"})
        wait_for(proxy.hung.is_set, "attempt 2 reading the poison file")
        wait_for(
            lambda: (
                poison.encode() in b"".join(work_objects(env, f"batch-work/runs/{env['BATCH_ID']}/progress/").values())
            ),
            "its progress note",
        )
        child.send_signal(signal.SIGKILL)
        child.wait()
    metrics = run_child({**env, "AWS_BATCH_JOB_ATTEMPT": "3"}, 0)
    assert metrics["files_quarantined"] == 1
    reduce_in_process(env)
    [(status, reason)] = query(database_url, "SELECT status, reason FROM processed_files WHERE key = %s", (poison,))
    assert status == "quarantined" and "stopped while reading it on attempt 2" in reason
    assert_database_matches(database_url, _expected_of([f for f in files if f.key != poison]))


def test_readers_are_never_blocked_by_a_reduce(s3_env, model_dir, database_url, sample):
    env = _env(s3_env, model_dir, database_url)
    _sharded(env, sample.files[:20], sample)
    reduce_in_process(env)
    second = _batch(env)
    _sharded(second, sample.files[20:], sample)
    with psycopg.connect(database_url) as blocker:
        # hold one user row: the reduce stops inside its transaction after writing every place
        blocker.execute("SELECT 1 FROM user_behavior_vectors ORDER BY user_id LIMIT 1 FOR UPDATE")
        reduce = start_module("reduce_job", second)
        wait_for(
            lambda: (
                query(
                    database_url,
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE application_name = 'reduce_job' AND wait_event_type = 'Lock'",
                )[0][0]
                == 1
            ),
            "the reduce waiting inside its transaction",
        )
        with psycopg.connect(database_url, autocommit=True) as reader:
            reader.execute("SET lock_timeout = '500ms'")
            started = time.monotonic()
            nearest = reader.execute(
                "SELECT place_id FROM place_vectors ORDER BY content_vector <=> "
                "(SELECT content_vector FROM place_vectors ORDER BY id LIMIT 1) LIMIT 10"
            ).fetchall()
            users = reader.execute("SELECT count(*) FROM user_behavior_vectors").fetchone()
            assert time.monotonic() - started < 0.5
        assert len(nearest) == 10 and users[0] > 0
        blocker.rollback()
    assert reduce.wait(timeout=120) == 0
    assert_database_matches(database_url, sample.expected)


def test_the_notice_is_idempotent_re_signed_per_attempt_and_never_redirected(
    s3_env, model_dir, database_url, receiver, sample
):
    receiver.script[:] = [503, 200]
    env = _env(s3_env, model_dir, database_url, receiver, WEBHOOK_BACKOFF_SECONDS="1")  # a new second to sign
    _sharded(env, sample.files[:3], sample)
    reduce_in_process(env)
    first, second = receiver.received
    assert first.body == second.body
    for delivery in (first, second):
        assert delivery.headers["Idempotency-Key"] == f"{env['BATCH_ID']}:SUCCEEDED"
        assert delivery.signature_valid(SECRET)
    assert int(second.headers["X-Signature-Timestamp"]) > int(first.headers["X-Signature-Timestamp"])

    receiver.received.clear()
    receiver.script[:] = [307]
    moved = _batch(env)
    _sharded(moved, sample.files[3:6], sample)
    reduce_in_process(moved)
    assert [r.status for r in receiver.received] == [307]  # refused, not followed to the Location
    assert query(
        database_url, "SELECT webhook_status, webhook_error FROM batch_runs WHERE batch_id = %s", (moved["BATCH_ID"],)
    ) == [("failed", "HTTP 307")]


def test_a_missing_webhook_secret_is_one_warning(s3_env, model_dir, database_url, receiver, sample):
    env = _env(s3_env, model_dir, database_url, receiver)
    env.pop("WEBHOOK_SECRET")
    seed(env, SampleSet(sample.files[:2], sample.expected))
    plan_run(env, shards=1)
    child = run_module("shard_job", env)
    reduce = run_module("reduce_job", env)
    assert child.returncode == 0 and reduce.returncode == 0
    for result in (child, reduce):
        warnings = [line for line in result.stderr.splitlines() if "WEBHOOK_SECRET is not set" in line]
        assert len(warnings) == 1 and json.loads(warnings[0])["level"] == "WARNING"
    [delivery] = receiver.received
    assert "X-Signature" not in delivery.headers


def test_the_reduce_lock_serialises_two_reduces_of_the_same_batch(s3_env, model_dir, database_url, receiver, sample):
    env = _env(s3_env, model_dir, database_url, receiver)
    _sharded(env, sample.files[:10], sample)
    with psycopg.connect(database_url) as blocker:
        blocker.execute("SELECT pg_advisory_xact_lock(%s)", (REDUCE_LOCK,))
        reduces = [start_module("reduce_job", env) for _ in range(2)]
        wait_for(lambda: advisory_waiters(database_url, REDUCE_LOCK) == 2, "both reduces waiting on the reduce lock")
        blocker.rollback()
    for reduce in reduces:
        _, err = reduce.communicate(timeout=120)
        assert reduce.returncode == 0, err[-2000:]
    assert_database_matches(database_url, _expected_of(sample.files[:10]))
    assert [r.json["job_status"] for r in receiver.delivered()] == ["SUCCEEDED"]
    assert query(database_url, "SELECT count(*) FROM processed_files") == [(10,)]


def test_a_planner_never_expires_a_run_while_it_commits(s3_env, model_dir, database_url, sample):
    env = _env(s3_env, model_dir, database_url)
    _sharded(env, sample.files[:10], sample)
    with psycopg.connect(database_url, autocommit=True) as conn:  # its lease ends while the reduce runs
        conn.execute("UPDATE batch_runs SET lease_expires_at = now() - interval '1 second'")
    seed(env, SampleSet(sample.files[10:12], sample.expected))
    with psycopg.connect(database_url) as blocker:
        # the reduce stops at its first write, inside its transaction, holding its run's row
        blocker.execute("LOCK TABLE user_place_interactions IN SHARE MODE")
        reduce = start_module("reduce_job", env)
        wait_for(
            lambda: (
                query(
                    database_url,
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'reduce_job'"
                    " AND wait_event_type = 'Lock'",
                )[0][0]
                == 1
            ),
            "the reduce waiting inside its transaction",
        )
        later = _batch(env)
        assert plan_run(later, shards=1)["files"] == 2  # only the new files: the committing run keeps its own
        status = query(database_url, "SELECT status FROM batch_runs WHERE batch_id = %s", (env["BATCH_ID"],))
        assert status == [("sharded",)]  # not recorded abandoned under it
        blocker.rollback()
    assert reduce.wait(timeout=120) == 0
    status = query(database_url, "SELECT status FROM batch_runs WHERE batch_id = %s", (env["BATCH_ID"],))
    assert status == [("notified",)]


@pytest.mark.parametrize(("timeout", "final"), [("3600", False), ("1", True)])
def test_sigterm_is_final_only_at_the_attempt_timeout(
    s3_env, model_dir, database_url, receiver, sample, timeout, final
):
    env = _env(s3_env, model_dir, database_url, receiver, JOB_TIMEOUT_SECONDS=timeout, JOB_ATTEMPTS="3")
    _sharded(env, sample.files[:4], sample)
    with psycopg.connect(database_url) as blocker:
        blocker.execute("SELECT pg_advisory_xact_lock(%s)", (REDUCE_LOCK,))
        reduce = start_module("reduce_job", env)
        wait_for(lambda: advisory_waiters(database_url, REDUCE_LOCK) == 1, "the reduce waiting on the reduce lock")
        if final:
            time.sleep(1.0)  # past the whole (1 s) attempt budget: this SIGTERM is Batch's timeout
        reduce.send_signal(signal.SIGTERM)
        _, err = reduce.communicate(timeout=60)
        blocker.rollback()
    assert reduce.returncode == 1
    if final:
        assert [r.json["job_status"] for r in receiver.received] == ["FAILED"]
        assert query(database_url, "SELECT status FROM batch_runs") == [("failed",)]
    else:  # a Spot interruption: Batch runs the attempt again
        assert "failure will be retried by Batch" in err
        assert receiver.received == []
        assert query(database_url, "SELECT status FROM batch_runs") == [("sharded",)]
