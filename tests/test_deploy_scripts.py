"""deploy.sh and submit_array.sh driven with the real AWS CLI against a moto server (Batch without docker)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

import boto3
import pytest

from local_stack.sample_data import SampleSet, generate
from tests.helpers import REPO, fresh_env, seed

VENV_BIN = str(Path(sys.executable).parent)


@pytest.fixture
def batch_env(moto, s3_env, model_dir, database_url):
    request = urllib.request.Request(
        f"{moto.endpoint}/moto-api/config",
        data=json.dumps({"batch": {"use_docker": False}}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    urllib.request.urlopen(request).read()
    tag = uuid.uuid4().hex[:8]
    session = boto3.session.Session(region_name=s3_env["AWS_REGION"])
    iam = session.client("iam")
    role = iam.create_role(RoleName=f"batch-{tag}", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    ec2 = session.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(GroupName=f"sg-{tag}", Description="batch", VpcId=vpc)["GroupId"]
    batch = session.client("batch")
    environment = batch.create_compute_environment(
        computeEnvironmentName=f"ce-{tag}",
        type="MANAGED",
        state="ENABLED",
        computeResources={"type": "FARGATE", "maxvCpus": 16, "subnets": [subnet], "securityGroupIds": [group]},
        serviceRole=role,
    )["computeEnvironmentArn"]
    queue = batch.create_job_queue(
        jobQueueName=f"queue-{tag}",
        state="ENABLED",
        priority=1,
        computeEnvironmentOrder=[{"order": 1, "computeEnvironment": environment}],
    )["jobQueueArn"]
    env = fresh_env(s3_env, model_dir, DATABASE_URL=database_url)  # the planner claims files in the ledger
    return {
        **env,
        "PATH": f"{VENV_BIN}:{os.environ['PATH']}",
        "NAME_PREFIX": f"wb-{tag}",
        "JOB_QUEUE": queue,
        "JOB_ROLE_ARN": role,
        "EXECUTION_ROLE_ARN": role,
        "DATABASE_URL_SECRET_ARN": "arn:aws:secretsmanager:ap-northeast-2:123456789012:secret:db",
        "WEBHOOK_SECRET_ARN": "arn:aws:secretsmanager:ap-northeast-2:123456789012:secret:hook",
        "WEBHOOK_URL": "https://main.example/batch-complete",
        "ACCOUNT_ID": "123456789012",
        "IMAGE_TAG": "test",
        "PYTHON": sys.executable,
    }


def _script(name: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(REPO / "scripts" / name), *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )


def _batch(env):
    return boto3.session.Session(region_name=env["AWS_REGION"]).client("batch")


def test_deploy_registers_both_job_definitions_from_the_templates(batch_env):
    result = _script("deploy.sh", batch_env, "--skip-images")
    assert result.returncode == 0, result.stderr
    definitions = _batch(batch_env).describe_job_definitions(status="ACTIVE")["jobDefinitions"]
    mine = {
        d["jobDefinitionName"]: d for d in definitions if d["jobDefinitionName"].startswith(batch_env["NAME_PREFIX"])
    }
    assert set(mine) == {f"{batch_env['NAME_PREFIX']}-shard", f"{batch_env['NAME_PREFIX']}-reduce"}
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
    # shards read stored content vectors; both secrets come from Secrets Manager, never the environment
    assert {x["name"]: x["valueFrom"] for x in container["secrets"]} == {
        "DATABASE_URL": batch_env["DATABASE_URL_SECRET_ARN"],
        "WEBHOOK_SECRET": batch_env["WEBHOOK_SECRET_ARN"],
    }
    logs = boto3.session.Session(region_name=batch_env["AWS_REGION"]).client("logs")
    assert "/aws/batch/job" in {g["logGroupName"] for g in logs.describe_log_groups()["logGroups"]}


def test_deploy_refuses_missing_settings_and_dry_run_prints_the_calls(batch_env):
    missing = _script("deploy.sh", {**batch_env, "JOB_ROLE_ARN": ""}, "--skip-images")
    assert missing.returncode == 2
    assert "JOB_ROLE_ARN is required" in missing.stderr
    dry = _script("deploy.sh", batch_env, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "+ docker build -f" in dry.stdout
    assert "+ aws batch register-job-definition --cli-input-json file://" in dry.stdout
    assert f"{batch_env['NAME_PREFIX']}-shard" not in {
        d["jobDefinitionName"] for d in _batch(batch_env).describe_job_definitions()["jobDefinitions"]
    }


def _submitted(env, result):
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_submit_array_submits_the_planned_size_and_a_dependent_reduce(batch_env):
    assert _script("deploy.sh", batch_env, "--skip-images").returncode == 0
    seed(batch_env, generate(actions=600, users=50, places=20, batch_size=20, malformed_files=0))
    out = _submitted(batch_env, _script("submit_array.sh", batch_env, "--", "--shards", "3"))
    assert out["shards"] == 3
    jobs = {
        j["jobId"]: j for j in _batch(batch_env).describe_jobs(jobs=[out["shard_job_id"], out["reduce_job_id"]])["jobs"]
    }
    shard, reduce = jobs[out["shard_job_id"]], jobs[out["reduce_job_id"]]
    assert shard["arrayProperties"]["size"] == 3
    assert {"name": "BATCH_ID", "value": out["batch_id"]} in shard["container"]["environment"]
    assert {"name": "BATCH_ID", "value": out["batch_id"]} in reduce["container"]["environment"]
    assert reduce["dependsOn"] == [{"jobId": out["shard_job_id"]}]


def test_one_shard_is_a_plain_job_and_zero_submits_nothing(batch_env):
    assert _script("deploy.sh", batch_env, "--skip-images").returncode == 0
    sample = generate(actions=200, users=20, places=10, batch_size=50, malformed_files=0)
    seed(batch_env, SampleSet(sample.files[:2], sample.expected))
    out = _submitted(batch_env, _script("submit_array.sh", batch_env, "--", "--shards", "1"))
    assert out["shards"] == 1
    [shard] = _batch(batch_env).describe_jobs(jobs=[out["shard_job_id"]])["jobs"]
    assert "arrayProperties" not in shard or not shard["arrayProperties"].get("size")
    empty = {**batch_env, "S3_PREFIX": "nothing-here/", "BATCH_ID": ""}
    none = _submitted(empty, _script("submit_array.sh", empty))
    assert none["shards"] == 0
    assert none["shard_job_id"] is None and none["reduce_job_id"] is None


def test_submit_dry_run_prints_the_calls_and_writes_nothing(batch_env):
    seed(batch_env, generate(actions=400, users=40, places=10, batch_size=20, malformed_files=0))
    result = _script("submit_array.sh", batch_env, "--dry-run", "--", "--shards", "2")
    out = _submitted(batch_env, result)
    assert "+ aws batch submit-job --job-name" in result.stderr
    assert "--array-properties size=2" in result.stderr
    assert "--depends-on jobId=dry-run-" in result.stderr
    listed = (
        boto3.session.Session(region_name=batch_env["AWS_REGION"])
        .client("s3")
        .list_objects_v2(Bucket=batch_env["WORK_BUCKET"])
    )
    assert listed.get("KeyCount", 0) == 0
    assert out["shards"] == 2
