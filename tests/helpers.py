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

from local_stack import harness
from local_stack.sample_data import SampleSet, ensure_bucket, upload
from reduce_job.collect import LoadedShard, fetch_shard, success_markers
from witple_batch.partials import ShardPartial, iter_strings
from witple_batch.run_layout import RunLayout, load_manifest
from witple_batch.s3 import s3_client
from witple_batch.settings import common_from_env

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
    """The planner as `python -m coordinator plan` runs it, in this process."""
    return harness.plan(env, shards=shards, **options)


def record_planned_in(url: str, run_id: str) -> None:
    """Record `run_id` planned in the database at `url`, as if planned there: for a run planned against
    another database (around this one's ledger and claims), so a reduce here may try to apply it."""
    import psycopg

    from witple_batch import run_state
    from witple_batch.schema import migrate

    with psycopg.connect(url, autocommit=True) as conn:
        migrate(conn)
        run_state.record_planned(conn, run_id, 3600, {})


def plan_around_the_ledger(env: dict[str, str], elsewhere: str, **options: Any) -> dict[str, Any]:
    """A run planned on the database at `elsewhere`, which knows nothing of env's ledger and claims:
    its files may be another run's in env's database, where it is recorded planned too."""
    planned = plan_run({**env, "DATABASE_URL": elsewhere}, **options)
    record_planned_in(env["DATABASE_URL"], env["BATCH_ID"])
    return planned


run_child = harness.run_child
reduce_in_process = harness.reduce
plan_sync = harness.plan_sync


def sync(env: dict[str, str], **options: Any) -> dict[str, Any]:
    """A catalogue sync run end to end, in process (env's BATCH_ID; SyncOptions' fields)."""
    return harness.run_batch(env, sync=True, **options).plan


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
    """One shard's partial as the reduce reads it (marker, checksums, arrays checked), in memory."""
    common = common_from_env(env)
    client = s3_client(common.region)
    layout = RunLayout(common.work_bucket, common.work_prefix, env["BATCH_ID"])
    manifest = load_manifest(client, layout, common.partials_key)
    markers = success_markers(client, layout, len(manifest.shards), common.partials_key)
    shard: LoadedShard = fetch_shard(client, layout, manifest, index, markers[index], common.partials_key)
    try:
        arrays = {name: array[:] for name, array in shard.arrays.items()}

        def ids(name: str) -> list[str]:
            return list(iter_strings(arrays[f"{name}_offsets"], arrays[f"{name}_utf8"], shard.where))

        return ShardPartial(
            user_ids=ids("users.id"),
            place_categories=ids("places.category"),
            place_ids=ids("places.id"),
            place_content=arrays["places.content"],
            place_text_sha256=arrays["places.text_sha256"],
            place_catalogue_sha256=arrays["places.catalogue_sha256"],
            pair_user=arrays["pairs.user"],
            pair_place=arrays["pairs.place"],
            pair_counts=arrays["pairs.counts"],
            pair_first_us=arrays["pairs.first_us"],
            pair_last_us=arrays["pairs.last_us"],
            files=shard.files,
            content_model=markers[index]["content_model"],
            place_text_version=markers[index]["place_text_version"],
        )
    finally:
        shard.close()


def run_module(module: str, env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return harness.module(module, env, *args, timeout=timeout)


def pipeline(env: dict[str, str], sample: SampleSet | None, shards: int = 2) -> dict[str, Any]:
    """Seed (optional), plan, run every child, reduce: one run end to end, in process."""
    if sample is not None:
        seed(env, sample)
    return harness.run_batch(env, shards=shards).plan


def query(url: str, sql: str, params: tuple = ()) -> list[tuple]:
    import psycopg

    with psycopg.connect(url) as conn:
        return conn.execute(sql, params).fetchall()  # type: ignore[arg-type]


def advisory_waiters(url: str, key: int) -> int:
    """Sessions waiting for the advisory lock `key`."""
    return query(
        url,
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        " AND ((classid::bigint << 32) | objid::bigint) = %s",
        (key,),
    )[0][0]


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
    from coordinator.submit import batch_client as client_for

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
