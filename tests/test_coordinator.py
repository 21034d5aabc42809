"""The coordinator (`python -m coordinator submit`) against Batch on the moto server: started by the
main server's own submit_job call, retried by Batch, resumed after dying between its two submits,
and the deploy script's test run that waits for all three jobs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from coordinator.config import BatchSettings
from coordinator.sizing import actions_in_key
from coordinator.submit import find_or_submit, job_status, shard_request
from local_stack.sample_data import catalogue, generate, install_catalogue
from tests.helpers import (
    REPO,
    batch_client,
    plan_run,
    query,
    reduce_in_process,
    run_as_batch,
    run_child,
    run_script,
    seed,
    work_objects,
)
from tests.test_reduce_job import assert_database_matches
from witple_batch.settings import common_from_env


def _deploy(env: dict[str, str]) -> None:
    result = run_script("deploy.sh", env, "--skip-images")
    assert result.returncode == 0, result.stderr


def _jobs_named(env: dict[str, str], name: str) -> list[str]:
    listed = batch_client(env).list_jobs(jobQueue=env["JOB_QUEUE"], filters=[{"name": "JOB_NAME", "values": [name]}])
    return [j["jobId"] for j in listed["jobSummaryList"] if j["jobName"] == name]


def _output(result: subprocess.CompletedProcess[str]) -> dict:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_the_main_servers_submit_job_starts_a_run_and_a_retry_submits_nothing_new(batch_env):
    _deploy(batch_env)
    sample = generate(actions=900, users=60, places=30, batch_size=30, malformed_files=0)
    seed(batch_env, sample)
    install_catalogue(batch_env["DATABASE_URL"], catalogue(30))
    batch = batch_client(batch_env)
    coordinator = batch.submit_job(  # exactly the main server's call (MAIN_SERVER.md)
        jobName="witple-vectorization-1764230400",
        jobQueue=batch_env["JOB_QUEUE"],
        jobDefinition=batch_env["COORDINATOR_JOB_DEFINITION"],
        parameters={
            "inputBucket": batch_env["S3_BUCKET"],
            "inputPrefix": "user-actions/",
            "outputTable": "user_behavior_vectors",
            "maxRecords": "300",
        },
    )["jobId"]
    env = {k: v for k, v in batch_env.items() if k not in ("S3_BUCKET", "BATCH_ID")}  # from the parameters only
    out = _output(run_as_batch(env, coordinator))
    assert out["batch_id"] == f"run-{coordinator}"
    assert len(out["submitted"]) == 2 and out["shards"] >= 1
    claimed = query(batch_env["DATABASE_URL"], "SELECT key FROM file_claims WHERE batch_id = %s", (out["batch_id"],))
    assert 0 < sum(actions_in_key(key) for (key,) in claimed) <= 300  # maxRecords, by the counts in the names
    assert len(claimed) == out["files"] < len(sample.files)
    shard, reduce = batch.describe_jobs(jobs=[out["shard_job_id"], out["reduce_job_id"]])["jobs"]
    for job in (shard, reduce):
        environment = {e["name"]: e["value"] for e in job["container"]["environment"]}
        assert environment["BATCH_ID"] == out["batch_id"]
        assert environment["S3_BUCKET"] == batch_env["S3_BUCKET"]
    assert reduce["dependsOn"] == [{"jobId": out["shard_job_id"]}]
    synced = out["sync"]  # the catalogue sync's own run, planned first: its children have places, no files
    assert (synced["batch_id"], synced["places"], synced["files"]) == (f"run-{coordinator}-sync", 30, 0)
    assert len(synced["submitted"]) == 2

    again = _output(run_as_batch(env, coordinator))  # Batch retries the coordinator: same job id
    assert again["submitted"] == [] and again["sync"]["submitted"] == []
    assert again["sync"]["resumed"] == "planned"
    assert (again["shard_job_id"], again["reduce_job_id"]) == (out["shard_job_id"], out["reduce_job_id"])
    assert again["resumed"] == "planned" and again["files"] == out["files"]
    prefix = batch_env["NAME_PREFIX"]
    assert _jobs_named(batch_env, f"{prefix}-shard-{out['batch_id']}") == [out["shard_job_id"]]
    assert _jobs_named(batch_env, f"{prefix}-reduce-{out['batch_id']}") == [out["reduce_job_id"]]


def test_describing_a_job_is_retried_as_the_other_batch_calls_are(moto, s3_env, monkeypatch):
    """A throttled or failing DescribeJobs (the chain's look at the previous reduce) is tried again, as
    ListJobs and SubmitJob are, instead of failing the coordinator: five tries at a proxy answering
    500 to every one (the pauses left out; the retry rule and the count are the module's own)."""
    from botocore.exceptions import ClientError
    from tenacity import wait_none

    from local_stack.fault_proxy import FaultProxy

    with FaultProxy.running(moto.endpoint, fail_keys=("/v1/describejobs",)) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        batch = batch_client(s3_env)
        with pytest.raises(ClientError):
            job_status.retry_with(wait=wait_none())(batch, "a-job-id")
    assert proxy.injected == 5


def test_a_coordinator_that_died_between_its_submits_submits_only_the_reduce(batch_env):
    _deploy(batch_env)
    seed(batch_env, generate(actions=400, users=40, places=20, batch_size=20, malformed_files=0))
    planned = plan_run(batch_env, shards=2)  # the first attempt planned ...
    config = common_from_env(batch_env)
    prefix = batch_env["NAME_PREFIX"]
    settings = BatchSettings(batch_env["JOB_QUEUE"], f"{prefix}-shard", f"{prefix}-reduce", prefix)
    batch = batch_client(batch_env)
    shard_id, new = find_or_submit(batch, settings, shard_request(settings, config, planned["batch_id"], 2))
    assert new  # ... and submitted the shard array, then died
    result = run_script("submit_array.sh", batch_env)  # the retry, with the same BATCH_ID
    out = _output(result)
    assert out["resumed"] == "planned" and out["shards"] == 2
    assert len(out["runs"]) == 1  # it had taken every file: the retry plans no further run
    assert out["shard_job_id"] == shard_id
    assert out["submitted"] == [out["reduce_job_id"]]
    [reduce] = batch.describe_jobs(jobs=[out["reduce_job_id"]])["jobs"]
    assert reduce["dependsOn"] == [{"jobId": shard_id}]


def test_an_ended_run_is_never_given_new_jobs(batch_env):
    _deploy(batch_env)
    seed(batch_env, generate(actions=200, users=20, places=10, batch_size=50, malformed_files=0))
    planned = plan_run(batch_env, shards=1)
    failed = "UPDATE batch_runs SET status = 'failed' WHERE batch_id = %s RETURNING 1"
    assert query(batch_env["DATABASE_URL"], failed, (planned["batch_id"],)) == [(1,)]
    out = _output(run_script("submit_array.sh", batch_env))
    assert out["resumed"] == "failed"
    assert out["submitted"] == [] and out["shard_job_id"] is None
    assert _jobs_named(batch_env, f"{batch_env['NAME_PREFIX']}-shard-{planned['batch_id']}") == []


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--output-table", "place_recommendations", "outputTable must be 'user_behavior_vectors'"),
        ("--input-bucket", "someone-elses-bucket", "inputBucket must be the deployed input bucket"),
        ("--input-prefix", "other-prefix/", "inputPrefix must be under the deployed S3_PREFIX 'user-actions/'"),
        ("--max-records", "lots", "--max-records (maxRecords) must be a whole number"),
        ("--input-prefix", "user-actions/year=2025/month=01/", "inputPrefix must be the folder holding the year=YYYY/"),
    ],
)
def test_a_request_the_job_cannot_honour_is_refused_in_one_line(batch_env, option, value, message):
    result = subprocess.run(
        [sys.executable, "-m", "coordinator", "submit", option, value],
        env={**os.environ, **batch_env},
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert message in json.loads(line)["msg"]
    assert work_objects(batch_env) == {}


def test_deploy_submits_a_test_run_and_reports_every_job(batch_env):
    env = {**batch_env, "SUBMIT_TEST_JOB": "true", "TEST_JOB_POLL_SECONDS": "1", "TEST_JOB_TIMEOUT_SECONDS": "120"}
    deploy = subprocess.Popen(
        ["bash", str(REPO / "scripts" / "deploy.sh"), "--skip-images"],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        deadline = time.monotonic() + 90
        while not (found := _test_coordinator(batch_env)):
            if time.monotonic() > deadline or deploy.poll() is not None:
                pytest.fail(f"deploy.sh submitted no test coordinator: {deploy.communicate()[1][-2000:]}")
            time.sleep(0.5)
        out = _output(run_as_batch({k: v for k, v in batch_env.items() if k != "BATCH_ID"}, found))
        assert out["files"] == 1 and out["shards"] == 1  # the one tiny file deploy.sh uploaded
        _, stderr = deploy.communicate(timeout=150)
    finally:
        deploy.kill()
    assert deploy.returncode == 0, stderr
    assert f"test run: coordinator {found} SUCCEEDED" in stderr
    assert f"test run: shard {out['shard_job_id']} SUCCEEDED" in stderr
    assert f"test run: reduce {out['reduce_job_id']} SUCCEEDED" in stderr


def _test_coordinator(env: dict[str, str]) -> str | None:
    listed = batch_client(env).list_jobs(
        jobQueue=env["JOB_QUEUE"], filters=[{"name": "JOB_NAME", "values": [f"{env['NAME_PREFIX']}-deploy-test-*"]}]
    )
    return next((j["jobId"] for j in listed["jobSummaryList"]), None)


def test_a_backlog_larger_than_one_run_is_chained_into_runs_that_add_up(batch_env):
    _deploy(batch_env)
    sample = generate(actions=900, users=60, places=30, batch_size=30, malformed_files=0)
    seed(batch_env, sample)
    env = {**batch_env, "MAX_ACTIONS_PER_RUN": "300"}
    out = _output(run_script("submit_array.sh", env, "--", "--shards", "2"))
    runs = [r for r in out["runs"] if r["shards"]]
    assert not out["runs"][-1]["more"]  # the chain stops when the new files run out
    base = batch_env["BATCH_ID"]
    assert [r["batch_id"] for r in runs] == [base] + [f"{base}-{k}" for k in range(1, len(runs))]
    assert all(0 < r["actions_named"] <= 300 for r in runs)
    assert sum(r["actions_named"] for r in runs) == sum(actions_in_key(f.key) for f in sample.files) == 900
    assert len(runs) >= 3
    batch = batch_client(batch_env)
    for run in runs:
        [reduce] = batch.describe_jobs(jobs=[run["reduce_job_id"]])["jobs"]
        # moto ends a job as it is submitted, so no previous reduce is still pending to wait for
        # (a reduce still pending is waited for; one that ended would fail or not hold back its follower)
        assert reduce["dependsOn"] == [{"jobId": run["shard_job_id"]}]
        assert [e["value"] for e in reduce["container"]["environment"] if e["name"] == "BATCH_ID"] == [run["batch_id"]]
    again = _output(run_script("submit_array.sh", env, "--", "--shards", "2"))  # a retried coordinator
    assert [r["submitted"] for r in again["runs"]] == [[]] * len(again["runs"])
    for run in runs:  # what Batch would run, in the order the dependencies allow
        run_env = {**batch_env, "BATCH_ID": run["batch_id"]}
        for index in range(run["shards"]):
            run_child(run_env, index)
        reduce_in_process(run_env)
    assert_database_matches(batch_env["DATABASE_URL"], sample.expected)  # three runs, the same totals as one
