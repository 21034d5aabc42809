"""Small helpers the service tests share: buckets, env dicts, running the jobs."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from local_stack.sample_data import SampleSet, ensure_bucket, upload
from shard_job.child import run_shard
from shard_job.config import shard_config_from_env
from shard_job.fetch_process import FetchProcess
from shard_job.model_source import ModelSource
from shard_job.plan import PlanOptions, plan
from witple_batch.config import common_from_env
from witple_batch.partials import SUCCESS_FILE, ShardPartial, decode_partial, parse_success
from witple_batch.run_layout import RunLayout
from witple_batch.s3 import s3_client

REPO = Path(__file__).resolve().parents[1]


def fresh_env(s3_env: dict[str, str], model_dir: Path, **extra: str) -> dict[str, str]:
    """A run's settings with its own buckets, so tests never see each other's objects."""
    tag = uuid.uuid4().hex[:10]
    env = {
        **s3_env,
        "S3_BUCKET": f"input-{tag}",
        "WORK_BUCKET": f"work-{tag}",
        "MODEL_DIR": str(model_dir),
        "BATCH_ID": f"test-{tag}",
        "EMBED_THREADS": "1",
        **extra,
    }
    client = s3_client(env["AWS_REGION"])
    ensure_bucket(client, env["S3_BUCKET"], env["AWS_REGION"])
    ensure_bucket(client, env["WORK_BUCKET"], env["AWS_REGION"])
    return env


def seed(env: dict[str, str], sample: SampleSet) -> None:
    upload(s3_client(env["AWS_REGION"]), env["S3_BUCKET"], sample.files)


def plan_run(env: dict[str, str], shards: int | None = 2, **options: Any) -> dict[str, Any]:
    """The planner as `python -m shard_job plan` runs it; without DATABASE_URL, as --no-ledger."""
    config = common_from_env(env)
    opts = PlanOptions(
        batch_id=env["BATCH_ID"],
        shards=shards,
        target_mb=options.get("target_mb", 64.0),
        since=options.get("since"),
        until=options.get("until"),
        max_files=options.get("max_files"),
        use_ledger=options.get("use_ledger", "DATABASE_URL" in env),
        refresh_per_shard=options.get("refresh_per_shard", 2_000),
        max_refresh_shards=options.get("max_refresh_shards", 8),
        model=options.get("model", ModelSource.from_env(env)),  # as the CLI reads it
        dry_run=options.get("dry_run", False),
        full=options.get("full", False),
        lookback_hours=options.get("lookback_hours", 24.0),
        max_records=options.get("max_records"),
    )
    return plan(s3_client(config.region), config, opts)


def run_child(env: dict[str, str], index: int) -> dict[str, Any]:
    config = shard_config_from_env({**env, "AWS_BATCH_JOB_ARRAY_INDEX": str(index)})
    with FetchProcess.started({**os.environ, **env}) as reader:
        return run_shard(s3_client(config.common.region), reader, config)


def work_objects(env: dict[str, str], prefix: str = "") -> dict[str, bytes]:
    client = s3_client(env["AWS_REGION"])
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=env["WORK_BUCKET"], Prefix=prefix):
        for obj in page.get("Contents", []):
            out[obj["Key"]] = client.get_object(Bucket=env["WORK_BUCKET"], Key=obj["Key"])["Body"].read()
    return out


def partial_files(env: dict[str, str], index: int) -> dict[str, bytes]:
    """One shard's partial as {file name: bytes}."""
    layout = RunLayout(env["WORK_BUCKET"], "batch-work/", env["BATCH_ID"])
    prefix = layout.shard_prefix(index)
    return {k[len(prefix) :]: v for k, v in work_objects(env, prefix).items()}


def load_partial(env: dict[str, str], index: int) -> ShardPartial:
    files = partial_files(env, index)
    marker = parse_success(files[SUCCESS_FILE], f"shard {index}/{SUCCESS_FILE}", common_from_env(env).partials_key)
    return decode_partial(files, marker, f"shard {index}")


def run_module(module: str, env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )


def reduce_in_process(env: dict[str, str]) -> Any:
    """The function `python -m reduce_job` runs, without a process (fast path for most tests)."""
    from reduce_job.config import reduce_config_from_env
    from reduce_job.run import run_reduce

    config = reduce_config_from_env(env)
    return run_reduce(s3_client(config.common.region), config)


def pipeline(env: dict[str, str], sample: SampleSet | None, shards: int = 2) -> dict[str, Any]:
    """Seed (optional), plan, run every child, reduce: one batch end to end, in process."""
    if sample is not None:
        seed(env, sample)
    planned = plan_run(env, shards=shards)
    for index in range(planned["shards"]):
        run_child(env, index)
    if planned["shards"]:
        reduce_in_process(env)
    return planned


def query(url: str, sql: str, params: tuple = ()) -> list[tuple]:
    import psycopg

    with psycopg.connect(url) as conn:
        return conn.execute(sql, params).fetchall()  # type: ignore[arg-type]


def start_module(module: str, env: dict[str, str], *args: str) -> subprocess.Popen:
    """`python -m module` in the background, as the job runs it; stdout and stderr kept."""
    return subprocess.Popen(
        [sys.executable, "-m", module, *args],
        env={**os.environ, **env},
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    pytest.fail(f"never happened: {what}")


def run_script(name: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """scripts/<name> with `env` over this process's environment."""
    return subprocess.run(
        ["bash", str(REPO / "scripts" / name), *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )


def batch_client(env: dict[str, str]) -> Any:
    from shard_job.submit import batch_client as client_for

    return client_for(env["AWS_REGION"])


def _session(env: dict[str, str], credentials: dict[str, str] | None) -> Any:
    import boto3

    keys = credentials or {k: env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    return boto3.session.Session(
        aws_access_key_id=keys["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=keys["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_REGION"],
    )


def run_as_batch(
    env: dict[str, str], job_id: str, roles: dict[str, dict[str, str]] | None = None, index: int | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a submitted job's container as Fargate would (moto records jobs, never runs them).

    As the definition's execution role: the image is authorised for pull, every `secrets[].valueFrom`
    is read into the environment, the output goes to the log group. As its job role: the command
    (the submitter's override, else the definition's), `Ref::` parameters filled from the
    definition's defaults and the submitted ones, the environment with the job's overrides,
    AWS_BATCH_JOB_ID (and the array index). `roles` maps a role ARN to the access keys standing in
    for it; without, env's own keys are both roles.
    """
    batch = batch_client(env)
    [job] = batch.describe_jobs(jobs=[job_id])["jobs"]
    [definition] = batch.describe_job_definitions(jobDefinitions=[job["jobDefinition"]])["jobDefinitions"]
    container = definition["containerProperties"]
    execution = _session(env, (roles or {}).get(container["executionRoleArn"]))
    repository, tag = container["image"].split("/", 1)[1].rsplit(":", 1)
    ecr = execution.client("ecr")
    ecr.get_authorization_token()
    ecr.batch_get_image(repositoryName=repository, imageIds=[{"imageTag": tag}])
    secrets = execution.client("secretsmanager")
    injected = {
        s["name"]: secrets.get_secret_value(SecretId=s["valueFrom"])["SecretString"] for s in container["secrets"]
    }
    parameters = {**definition.get("parameters", {}), **job.get("parameters", {})}
    command = job["container"].get("command") or container["command"]  # the submitter may override it
    command = [parameters.get(word[5:], word) if word.startswith("Ref::") else word for word in command]
    command[0] = sys.executable if command[0] == "python" else command[0]
    environment = {e["name"]: e["value"] for e in [*container["environment"], *job["container"].get("environment", [])]}
    batch_vars = {"AWS_BATCH_JOB_ID": job_id if index is None else f"{job_id}:{index}"}
    if index is not None:
        batch_vars["AWS_BATCH_JOB_ARRAY_INDEX"] = str(index)
    job_role = (roles or {}).get(container["jobRoleArn"], {})
    result = subprocess.run(
        command,
        env={**os.environ, **env, "BATCH_ID": "", **environment, **injected, **job_role, **batch_vars},
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    options = container["logConfiguration"]["options"]
    stream = f"{options['awslogs-stream-prefix']}/default/{uuid.uuid4().hex}"  # one per attempt: its task id
    logs = execution.client("logs")
    logs.create_log_stream(logGroupName=options["awslogs-group"], logStreamName=stream)
    lines = [line for line in (*result.stderr.splitlines(), *result.stdout.splitlines()) if line]
    lines.append(f"exit code {result.returncode}")
    now = int(time.time() * 1000)
    logs.put_log_events(
        logGroupName=options["awslogs-group"],
        logStreamName=stream,
        logEvents=[{"timestamp": now, "message": line} for line in lines],
    )
    return result


def stack_resources(env: dict[str, str]) -> dict[str, str]:
    """The deployed stack's physical ids by logical id (moto lists the types it cannot create as empty rows)."""
    import boto3

    cloudformation = boto3.session.Session(region_name=env["AWS_REGION"]).client("cloudformation")
    listed = cloudformation.describe_stack_resources(StackName=env.get("STACK_NAME") or env["NAME_PREFIX"])
    return {
        r["LogicalResourceId"]: r["PhysicalResourceId"] for r in listed["StackResources"] if "LogicalResourceId" in r
    }
