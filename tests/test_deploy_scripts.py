"""deploy.sh and submit_array.sh driven with the real AWS CLI against a moto server (Batch without docker)."""

from __future__ import annotations

import json

import boto3

from local_stack.sample_data import SampleSet, generate
from tests.helpers import batch_client, run_script, seed


def test_deploy_registers_both_job_definitions_from_the_templates(batch_env):
    result = run_script("deploy.sh", batch_env, "--skip-images")
    assert result.returncode == 0, result.stderr
    definitions = batch_client(batch_env).describe_job_definitions(status="ACTIVE")["jobDefinitions"]
    mine = {
        d["jobDefinitionName"]: d for d in definitions if d["jobDefinitionName"].startswith(batch_env["NAME_PREFIX"])
    }
    assert set(mine) == {
        f"{batch_env['NAME_PREFIX']}-shard",
        f"{batch_env['NAME_PREFIX']}-reduce",
        batch_env["COORDINATOR_JOB_DEFINITION"],
    }
    coordinator = mine[batch_env["COORDINATOR_JOB_DEFINITION"]]
    assert coordinator["containerProperties"]["command"][:4] == ["python", "-m", "coordinator", "submit"]
    assert coordinator["parameters"] == {
        "inputBucket": batch_env["S3_BUCKET"],
        "inputPrefix": "user-actions/",
        "outputTable": "user_behavior_vectors",
        "maxRecords": "0",
    }
    shard = mine[f"{batch_env['NAME_PREFIX']}-shard"]
    assert shard["platformCapabilities"] == ["FARGATE"]
    assert shard["retryStrategy"]["attempts"] == 3
    assert shard["timeout"]["attemptDurationSeconds"] == 3600
    container = shard["containerProperties"]
    assert (
        container["image"] == f"123456789012.dkr.ecr.ap-northeast-2.amazonaws.com/{batch_env['NAME_PREFIX']}-shard:test"
    )
    assert {r["type"]: r["value"] for r in container["resourceRequirements"]} == {"VCPU": "2", "MEMORY": "4096"}
    assert {e["name"]: e["value"] for e in container["environment"]}["S3_BUCKET"] == batch_env["S3_BUCKET"]
    assert container["logConfiguration"]["options"]["awslogs-group"] == "/aws/batch/job"
    # secrets come from Secrets Manager, never the environment; the shards get the read-only database role
    assert {x["name"]: x["valueFrom"] for x in container["secrets"]} == {
        "DATABASE_URL": batch_env["SHARD_DATABASE_URL_SECRET_ARN"],
        "WEBHOOK_SECRET": batch_env["WEBHOOK_SECRET_ARN"],
        "PARTIALS_SECRET": batch_env["PARTIALS_SECRET_ARN"],
    }
    for writer in (f"{batch_env['NAME_PREFIX']}-reduce", batch_env["COORDINATOR_JOB_DEFINITION"]):
        secrets = {x["name"]: x["valueFrom"] for x in mine[writer]["containerProperties"]["secrets"]}
        assert secrets["DATABASE_URL"] == batch_env["DATABASE_URL_SECRET_ARN"]
        assert secrets["PARTIALS_SECRET"] == batch_env["PARTIALS_SECRET_ARN"]
    logs = boto3.session.Session(region_name=batch_env["AWS_REGION"]).client("logs")
    assert "/aws/batch/job" in {g["logGroupName"] for g in logs.describe_log_groups()["logGroups"]}


def test_deploy_refuses_missing_settings_and_dry_run_prints_the_calls(batch_env):
    missing = run_script("deploy.sh", {**batch_env, "JOB_ROLE_ARN": ""}, "--skip-images")
    assert missing.returncode == 2
    assert "JOB_ROLE_ARN is required" in missing.stderr
    shared = run_script("deploy.sh", {**batch_env, "WORK_BUCKET": batch_env["S3_BUCKET"]}, "--skip-images")
    assert shared.returncode == 2
    assert "WORK_BUCKET must not be the input bucket" in shared.stderr
    dry = run_script("deploy.sh", batch_env, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "+ docker build -f" in dry.stdout
    assert "+ aws batch register-job-definition --cli-input-json file://" in dry.stdout
    assert f"{batch_env['NAME_PREFIX']}-shard" not in {
        d["jobDefinitionName"] for d in batch_client(batch_env).describe_job_definitions()["jobDefinitions"]
    }


def _submitted(env, result):
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_submit_array_submits_the_planned_size_and_a_dependent_reduce(batch_env):
    assert run_script("deploy.sh", batch_env, "--skip-images").returncode == 0
    seed(batch_env, generate(actions=600, users=50, places=20, batch_size=20, malformed_files=0))
    out = _submitted(batch_env, run_script("submit_array.sh", batch_env, "--", "--shards", "3"))
    assert out["shards"] == 3
    described = batch_client(batch_env).describe_jobs(jobs=[out["shard_job_id"], out["reduce_job_id"]])["jobs"]
    jobs = {j["jobId"]: j for j in described}
    shard, reduce = jobs[out["shard_job_id"]], jobs[out["reduce_job_id"]]
    assert shard["arrayProperties"]["size"] == 3
    assert {"name": "BATCH_ID", "value": out["batch_id"]} in shard["container"]["environment"]
    assert {"name": "BATCH_ID", "value": out["batch_id"]} in reduce["container"]["environment"]
    assert reduce["dependsOn"] == [{"jobId": out["shard_job_id"]}]


def test_one_shard_is_a_plain_job_and_zero_submits_nothing(batch_env):
    assert run_script("deploy.sh", batch_env, "--skip-images").returncode == 0
    sample = generate(actions=200, users=20, places=10, batch_size=50, malformed_files=0)
    seed(batch_env, SampleSet(sample.files[:2], sample.expected))
    out = _submitted(batch_env, run_script("submit_array.sh", batch_env, "--", "--shards", "1"))
    assert out["shards"] == 1
    [shard] = batch_client(batch_env).describe_jobs(jobs=[out["shard_job_id"]])["jobs"]
    assert "arrayProperties" not in shard or not shard["arrayProperties"].get("size")
    empty = {**batch_env, "S3_PREFIX": "nothing-here/", "BATCH_ID": ""}
    none = _submitted(empty, run_script("submit_array.sh", empty))
    assert none["shards"] == 0
    assert none["shard_job_id"] is None and none["reduce_job_id"] is None


def test_submit_dry_run_prints_the_calls_and_writes_nothing(batch_env):
    seed(batch_env, generate(actions=400, users=40, places=10, batch_size=20, malformed_files=0))
    out = _submitted(batch_env, run_script("submit_array.sh", batch_env, "--dry-run", "--", "--shards", "2"))
    shard, reduce = out["would_submit"]
    assert shard["arrayProperties"] == {"size": 2}
    assert shard["jobDefinition"] == f"{batch_env['NAME_PREFIX']}-shard"
    assert reduce["dependsOn"] == [{"jobId": "<shard job id>"}]
    assert {"name": "BATCH_ID", "value": out["batch_id"]} in reduce["containerOverrides"]["environment"]
    listed = (
        boto3.session.Session(region_name=batch_env["AWS_REGION"])
        .client("s3")
        .list_objects_v2(Bucket=batch_env["WORK_BUCKET"])
    )
    assert listed.get("KeyCount", 0) == 0
    assert out["shards"] == 2
    mine = [{"name": "JOB_NAME", "values": [f"{batch_env['NAME_PREFIX']}*"]}]
    assert batch_client(batch_env).list_jobs(jobQueue=batch_env["JOB_QUEUE"], filters=mine)["jobSummaryList"] == []
