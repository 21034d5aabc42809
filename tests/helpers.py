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


def run_as_batch(env: dict[str, str], job_id: str) -> subprocess.CompletedProcess[str]:
    """Run a submitted job's container the way Batch would (moto records jobs, never runs them):
    the image's entrypoint with the definition's command, `Ref::` parameters filled from the
    definition's defaults and the submitted ones, the definition's environment and the job id."""
    batch = batch_client(env)
    [job] = batch.describe_jobs(jobs=[job_id])["jobs"]
    [definition] = batch.describe_job_definitions(jobDefinitions=[job["jobDefinition"]])["jobDefinitions"]
    parameters = {**definition.get("parameters", {}), **job.get("parameters", {})}
    command = [
        parameters.get(word[5:], word) if word.startswith("Ref::") else word
        for word in definition["containerProperties"]["command"]
    ]
    container_env = {e["name"]: e["value"] for e in definition["containerProperties"]["environment"]}
    return subprocess.run(
        [sys.executable, "-m", "shard_job", *command],
        env={**os.environ, **env, **container_env, "AWS_BATCH_JOB_ID": job_id, "BATCH_ID": ""},
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
