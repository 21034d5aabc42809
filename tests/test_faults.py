"""Fault injection with real processes: every run ends exact, or fails clearly with nothing half-applied."""

from __future__ import annotations

import signal

import pytest

from local_stack.fault_proxy import FaultProxy
from local_stack.postgres import LOCAL_PASSWORD, LocalPostgres
from local_stack.sample_data import SampleSet, generate
from tests.helpers import (
    fresh_env,
    plan_run,
    query,
    run_child,
    run_module,
    seed,
    start_module,
    wait_for,
    work_objects,
)
from tests.test_reduce_job import assert_database_matches

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sample() -> SampleSet:
    return generate(actions=1_500, users=120, places=50, seed=21, batch_size=40)


def _shard_files(env: dict[str, str], index: int = 0) -> dict[str, bytes]:
    prefix = f"batch-work/runs/{env['BATCH_ID']}/shards/{index:05d}/"
    return {k[len(prefix) :]: v for k, v in work_objects(env, prefix).items()}


def test_transient_s3_faults_are_retried_to_exact_totals(moto, s3_env, model_dir, database_url, sample):
    env = fresh_env(s3_env, model_dir, DATABASE_URL=database_url)
    seed(env, sample)
    plan_run(env, shards=2)
    with FaultProxy.running(moto.endpoint, fault_rate=0.15) as proxy:
        faulty = {**env, "AWS_ENDPOINT_URL": proxy.url}
        for index in range(2):
            result = run_module("shard_job", {**faulty, "AWS_BATCH_JOB_ARRAY_INDEX": str(index)})
            assert result.returncode == 0, result.stderr[-2000:]
        reduced = run_module("reduce_job", faulty)
        assert reduced.returncode == 0, reduced.stderr[-2000:]
        assert proxy.injected > 10
    assert_database_matches(database_url, sample.expected)


def test_a_permanent_s3_fault_fails_the_child_naming_the_key(moto, s3_env, model_dir, sample, database_url):
    env = fresh_env(s3_env, model_dir, DATABASE_URL=database_url)
    seed(env, SampleSet(sample.files[:4], sample.expected))
    plan_run(env, shards=1)
    with FaultProxy.running(moto.endpoint, fail_keys=(sample.files[2].key,)) as proxy:
        result = run_module("shard_job", {**env, "AWS_ENDPOINT_URL": proxy.url, "AWS_MAX_ATTEMPTS": "2"})
    assert result.returncode == 1
    assert sample.files[2].key in result.stderr
    assert "InternalError" in result.stderr
    assert "_SUCCESS.json" not in _shard_files(env)


def test_a_shard_killed_mid_upload_reruns_to_identical_bytes(moto, s3_env, model_dir, database_url, sample):
    env = fresh_env(s3_env, model_dir, DATABASE_URL=database_url)
    seed(env, sample)
    plan_run(env, shards=1)
    run_child(env, 0)
    clean = _shard_files(env)
    client_env = {**env}
    for key in list(clean):
        import boto3

        boto3.session.Session(region_name=env["AWS_REGION"]).client("s3").delete_object(
            Bucket=env["WORK_BUCKET"], Key=f"batch-work/runs/{env['BATCH_ID']}/shards/00000/{key}"
        )
    with FaultProxy.running(
        moto.endpoint, hang_when=lambda method, path: method == "PUT" and "pairs.counts" in path
    ) as proxy:
        child = start_module("shard_job", {**client_env, "AWS_ENDPOINT_URL": proxy.url})
        assert proxy.hung.wait(120), "the child never reached the upload"
        child.send_signal(signal.SIGKILL)
        child.wait()
    partial = _shard_files(env)
    assert partial and "_SUCCESS.json" not in partial
    retried = run_module("shard_job", {**env, "AWS_BATCH_JOB_ATTEMPT": "2"})
    assert retried.returncode == 0, retried.stderr[-2000:]
    again = _shard_files(env)
    assert set(again) == set(clean)
    for name in clean:
        if name not in ("metrics.json", "_SUCCESS.json"):
            assert again[name] == clean[name], name
    assert run_module("reduce_job", env).returncode == 0
    assert_database_matches(database_url, sample.expected)


def test_reduce_killed_after_commit_sends_the_webhook_once(s3_env, model_dir, database_url, receiver, sample):
    receiver.script[:] = [0]  # the first delivery hangs: the reduce is killed while waiting
    env = fresh_env(
        s3_env, model_dir, DATABASE_URL=database_url, WEBHOOK_URL=receiver.url, WEBHOOK_TIMEOUT_SECONDS="600"
    )  # the reduce surely still waits for the answer when it is killed
    seed(env, sample)
    plan_run(env, shards=1)
    run_child(env, 0)
    reduce = start_module("reduce_job", env)
    try:
        if not receiver.hanging.wait(timeout=120):
            pytest.fail("the reduce never reached the webhook")
    finally:
        reduce.send_signal(signal.SIGKILL)
        reduce.wait()
    assert query(database_url, "SELECT status, webhook_status FROM batch_runs") == [("committed", None)]
    snapshot = query(database_url, "SELECT sum(total_actions) FROM user_behavior_vectors")
    for _ in range(2):
        result = run_module("reduce_job", env)
        assert result.returncode == 0, result.stderr[-2000:]
    assert len(receiver.delivered()) == 1
    assert query(database_url, "SELECT sum(total_actions) FROM user_behavior_vectors") == snapshot
    assert_database_matches(database_url, sample.expected)


def test_a_database_refusing_connections_fails_clearly(s3_env, model_dir, database_url, sample, dead_port):
    env = fresh_env(
        s3_env,
        model_dir,
        CATALOGUE_SOURCE="none",  # the child goes on without the database; the reduce cannot
        DB_CONNECT_ATTEMPTS="2",
        DATABASE_URL=f"postgresql://app:{LOCAL_PASSWORD}@127.0.0.1:{dead_port}/witple",
    )
    seed(env, SampleSet(sample.files[:3], sample.expected))
    plan_run({**env, "DATABASE_URL": database_url}, shards=1)  # planned while the database answered
    run_child(env, 0)
    result = run_module("reduce_job", env)
    assert result.returncode == 1
    assert "cannot connect to postgresql://app:***@127.0.0.1" in result.stderr
    assert "after 2 attempts" in result.stderr
    assert LOCAL_PASSWORD not in result.stderr


def test_postgres_stopped_during_the_reduce_leaves_nothing_half_applied(s3_env, model_dir, sample, tmp_path):
    import psycopg

    with LocalPostgres.running(tmp_path / "pg") as pg:
        env = fresh_env(s3_env, model_dir, DATABASE_URL=pg.url, DB_CONNECT_ATTEMPTS="1")
        first, second = SampleSet(sample.files[:20], sample.expected), SampleSet(sample.files[20:], sample.expected)
        seed(env, first)
        plan_run(env, shards=1)
        run_child(env, 0)
        assert run_module("reduce_job", env).returncode == 0
        before = query(pg.url, "SELECT sum(total_actions), count(*) FROM processed_files, user_behavior_vectors")
        later = {**env, "BATCH_ID": env["BATCH_ID"] + "-2"}
        seed(later, second)
        plan_run(later, shards=1)
        run_child(later, 0)
        blocker = psycopg.connect(pg.url)
        blocker.execute("SELECT 1 FROM user_behavior_vectors ORDER BY user_id LIMIT 1 FOR UPDATE")
        reduce = start_module("reduce_job", later)
        try:
            # inside its transaction: it wrote interactions and waits on the row the blocker holds
            wait_for(
                lambda: (
                    query(
                        pg.url,
                        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'reduce_job' "
                        "AND wait_event_type = 'Lock' AND state = 'active' AND xact_start IS NOT NULL",
                    )[0][0]
                    > 0
                ),
                "the reduce waiting inside its transaction",
            )
            pg.stop("fast")
            _, err = reduce.communicate(timeout=120)
        finally:
            reduce.kill()
        blocker.close()
        assert reduce.returncode == 1
        # psycopg's AdminShutdown (57P01) is an OperationalError; either name is in the one error line
        assert "AdminShutdown" in err or "OperationalError" in err, err[-2000:]
        pg.start()
        assert (
            query(pg.url, "SELECT sum(total_actions), count(*) FROM processed_files, user_behavior_vectors") == before
        )
        assert run_module("reduce_job", later).returncode == 0
        assert query(pg.url, "SELECT count(DISTINCT batch_id) FROM processed_files") == [(2,)]
        assert_database_matches(pg.url, sample.expected)  # the rerun's totals are the whole sample's
