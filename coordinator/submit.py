"""Submitting a run's jobs to AWS Batch: the shard array and the reduce that depends on it, once per
run however often the coordinator itself is retried.

Batch retries a coordinator that died, and a retry must not start a second run. So the run id
defaults to one derived from the coordinator's own job id (the same on every attempt), a plan
already recorded for it is resumed instead of made again, and each job is looked up by its name
on the queue before it is submitted. A run that already ended (committed or failed) is never given
new jobs. A backlog larger than one reduce can apply inside its timeout becomes a chain of runs.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import psycopg
from botocore.exceptions import ClientError
from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential

from coordinator.config import BatchSettings, PlanOptions
from coordinator.plan import PlannedRun, plan_run
from coordinator.sync import SyncOptions, plan_sync
from witple_batch import metrics, run_state
from witple_batch.errors import ConfigError
from witple_batch.logs import event
from witple_batch.s3 import aws_session
from witple_batch.settings import CommonConfig, validate_run_id

log = logging.getLogger(__name__)

OUTPUT_TABLE = "user_behavior_vectors"  # the only table the main server may name: ours writes it
_JOB_NAME_CHARS = re.compile(r"[^A-Za-z0-9_-]")
_TRANSIENT = {"ThrottlingException", "TooManyRequestsException", "ServerException", "ServiceUnavailable"}
# a job worth waiting for: one that ended (or failed) would fail, or not hold back, what depends on it
PENDING = ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING")


def coordinator_run_id(job_id: str) -> str | None:
    """The run id of a coordinator started by Batch: its job id, stable across its attempts."""
    return None if job_id == "local" else f"run-{job_id.replace(':', '-')}"


def job_name(settings: BatchSettings, kind: str, run_id: str) -> str:
    """`<prefix>-<kind>-<BATCH_ID>` in Batch's alphabet, at most 128 characters (a hash keeps
    long ids apart)."""
    name = _JOB_NAME_CHARS.sub("_", f"{settings.name_prefix}-{kind}-{run_id}")
    if len(name) <= 128:
        return name
    return f"{name[:111]}-{hashlib.sha256(run_id.encode()).hexdigest()[:16]}"


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {}).get("Code", "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return error in _TRANSIENT or status >= 500
    return isinstance(exc, OSError)


# the client itself never retries SubmitJob (batch_client): a retry here looks the job up first,
# after a pause that gives ListJobs time to show a submit whose answer was lost
_retried = retry(
    retry=retry_if_exception(_transient),
    stop=stop_after_attempt(5),
    wait=wait_exponential(multiplier=2, min=5, max=30),
    reraise=True,
)


def batch_client(region: str) -> Any:
    from botocore.config import Config

    config = Config(region_name=region, retries={"total_max_attempts": 1}, connect_timeout=10, read_timeout=60)
    return aws_session().client("batch", config=config)


@_retried
def find_job(batch: Any, queue: str, name: str, run_id: str) -> str | None:
    """The id of a job already submitted under `name` on `queue` for this BATCH_ID (any status),
    oldest first; a job of another run whose id maps to the same name is not ours."""
    found: list[tuple[int, str]] = []
    for page in batch.get_paginator("list_jobs").paginate(
        jobQueue=queue, filters=[{"name": "JOB_NAME", "values": [name]}]
    ):
        found += [(job.get("createdAt", 0), job["jobId"]) for job in page["jobSummaryList"] if job["jobName"] == name]
    for _, job_id in sorted(found):
        [job] = batch.describe_jobs(jobs=[job_id])["jobs"]
        environment = job.get("container", {}).get("environment", [])
        if {"name": "BATCH_ID", "value": run_id} in environment:
            return job_id
    return None


@_retried
def job_status(batch: Any, job_id: str) -> str:
    """The Batch status of `job_id` (a chain asks it of the previous run's reduce)."""
    [job] = batch.describe_jobs(jobs=[job_id])["jobs"]
    return str(job["status"])


@_retried
def find_or_submit(batch: Any, settings: BatchSettings, request: dict[str, Any]) -> tuple[str, bool]:
    """(job id, whether this call submitted it). Looked up again before every try: a try whose
    answer was lost may have submitted the job."""
    run_id = _run_id_of(request)
    if (existing := find_job(batch, settings.queue, request["jobName"], run_id)) is not None:
        return existing, False
    return batch.submit_job(**request)["jobId"], True


def _run_id_of(request: dict[str, Any]) -> str:
    return next(e["value"] for e in request["containerOverrides"]["environment"] if e["name"] == "BATCH_ID")


def _environment(config: CommonConfig, run_id: str) -> list[dict[str, str]]:
    return [
        {"name": "BATCH_ID", "value": run_id},
        {"name": "S3_BUCKET", "value": config.s3_bucket},
        {"name": "S3_PREFIX", "value": config.s3_prefix},
    ]


def shard_request(settings: BatchSettings, config: CommonConfig, run_id: str, shards: int) -> dict[str, Any]:
    """An array job from 2 children (Batch's minimum size), a plain job for one."""
    request = {
        "jobName": job_name(settings, "shard", run_id),
        "jobQueue": settings.queue,
        "jobDefinition": settings.shard_definition,
        "containerOverrides": {"environment": _environment(config, run_id)},
    }
    return {**request, "arrayProperties": {"size": shards}} if shards > 1 else request


def reduce_request(settings: BatchSettings, config: CommonConfig, run_id: str, after: list[str]) -> dict[str, Any]:
    """The reduce, after its shard job (and the previous run's reduce in a chain)."""
    return {
        "jobName": job_name(settings, "reduce", run_id),
        "jobQueue": settings.queue,
        "jobDefinition": settings.reduce_definition,
        "dependsOn": [{"jobId": job_id} for job_id in after],
        "containerOverrides": {"environment": _environment(config, run_id)},
    }


def chain_run_id(run_id: str, index: int) -> str:
    """The id of the index-th run of one submission: BATCH_ID, then BATCH_ID-1, BATCH_ID-2, ..."""
    return run_id if index == 0 else validate_run_id(f"{run_id}-{index}")


def submit(
    conn: psycopg.Connection,
    s3: Any,
    batch: Any,
    config: CommonConfig,
    settings: BatchSettings,
    options: PlanOptions,
    sync: SyncOptions | None = None,
) -> dict[str, Any]:
    """The catalogue sync's run first (unless `sync` is None), so the catalogue's places are
    embedded before the runs that act on them need them; then runs of at most
    `settings.actions_per_run` actions each (by the counts in the file names), until the new files
    run out, `options.max_records` is reached or `settings.max_runs` runs are planned: each run's
    shard job starts at once, each reduce after its shards and the previous reduce, so every
    transaction stays the size one reduce applies inside its timeout however large the backlog.
    Returns the first run's result with every run under "runs" and the sync's under "sync"."""
    synced = None
    if sync is not None:
        synced = submit_run(
            conn, batch, config, settings, sync.run_id, lambda: plan_sync(conn, s3, config, sync), None, sync.dry_run
        )
    runs: list[dict[str, Any]] = []
    taken, previous_reduce = 0, None
    chain_run_id(options.run_id, settings.max_runs - 1)  # every id of the chain valid before anything is submitted
    for index in range(settings.max_runs):
        cap = settings.actions_per_run
        if options.max_records is not None:
            cap = min(cap, options.max_records - taken)
        if cap <= 0:
            break
        run_options = replace(
            options,
            run_id=chain_run_id(options.run_id, index),
            max_records=cap,
            lease_hours=options.lease_hours + index,  # a run later in the chain waits longer for its reduce
        )
        after = previous_reduce if previous_reduce and job_status(batch, previous_reduce) in PENDING else None
        result = submit_run(
            conn,
            batch,
            config,
            settings,
            run_options.run_id,
            lambda o=run_options: plan_run(conn, s3, config, o),  # type: ignore[misc]
            after,
            options.dry_run,
        )
        runs.append(result)
        if result["shards"] == 0 or not result["more"] or options.dry_run:
            break
        taken += result["actions_named"]
        previous_reduce = result["reduce_job_id"]
    metrics.emit("coordinator", {"Runs": sum(1 for r in runs if r["shards"]), "Files": sum(r["files"] for r in runs)})
    return {**runs[0], "runs": runs, "sync": synced}


def submit_run(
    conn: psycopg.Connection,
    batch: Any,
    config: CommonConfig,
    settings: BatchSettings,
    run_id: str,
    plan: Callable[[], PlannedRun],
    after: str | None,
    dry_run: bool,
) -> dict[str, Any]:
    """One run: plan it (or resume the plan recorded for its id), then make sure both jobs exist,
    the reduce after its shards and after the reduce `after`; the result names them and lists the
    ids this call submitted."""
    existing = run_state.get(conn, run_id)
    planned = PlannedRun.resumed_from(existing) if existing else plan()
    run_id, shards = planned.run_id, planned.shards
    result: dict[str, Any] = {**planned.as_json(), "shard_job_id": None, "reduce_job_id": None, "submitted": []}
    if shards == 0:
        event(log, "nothing new to process; no jobs submitted", batch_id=run_id)
        return result
    if dry_run:
        shard = shard_request(settings, config, run_id, shards)
        result["would_submit"] = [shard, reduce_request(settings, config, run_id, ["<shard job id>"])]
        return result
    may_submit = existing is None or existing.status in run_state.LIVE

    def ensure(request: dict[str, Any]) -> str | None:
        if not may_submit:  # an ended run: report its jobs, never start new ones
            return find_job(batch, settings.queue, request["jobName"], run_id)
        job_id, new = find_or_submit(batch, settings, request)
        if new:
            result["submitted"].append(job_id)
        return job_id

    result["shard_job_id"] = shard_id = ensure(shard_request(settings, config, run_id, shards))
    if shard_id is not None:
        waits_for = [shard_id] if after is None else [shard_id, after]
        result["reduce_job_id"] = ensure(reduce_request(settings, config, run_id, waits_for))
    event(
        log,
        "run submitted" if result["submitted"] else "run's jobs already there",
        **{k: result[k] for k in ("batch_id", "shards", "shard_job_id", "reduce_job_id", "submitted")},
    )
    return result


def parse_output_table(value: str | None) -> None:
    """The main server's outputTable: the batch writes user_behavior_vectors (and place_vectors),
    so any other table is a request this job cannot honour."""
    if value and value != OUTPUT_TABLE:
        raise ConfigError(f"outputTable must be {OUTPUT_TABLE!r} (the table this job writes), got {value!r}")
