"""`python -m shard_job submit`: the coordinator. Plan, then submit the shard array and the reduce
that depends on it, once per BATCH_ID however often the coordinator itself is retried.

Batch retries a coordinator that died, and a retry must not start a second run. So the BATCH_ID
defaults to one derived from the coordinator's own job id (the same on every attempt), a plan
already recorded for it is resumed instead of made again, and each job is looked up by its name
on the queue before it is submitted. A run that already ended (committed or failed) is never given
new jobs. The main server starts the coordinator with its own `parameters` (inputBucket,
inputPrefix, outputTable, maxRecords), which its job definition passes here through `Ref::`.
A backlog larger than one reduce can apply inside its timeout becomes a chain of runs.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass, replace
from typing import Any

from botocore.exceptions import ClientError
from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential

from shard_job.plan import PlanOptions, plan
from witple_batch import metrics
from witple_batch.config import CommonConfig, validate_batch_id
from witple_batch.logs import event
from witple_batch.settings import ConfigError, env_int, env_required, env_str

log = logging.getLogger(__name__)

OUTPUT_TABLE = "user_behavior_vectors"  # the only table the main server may name: ours writes it
_JOB_NAME_CHARS = re.compile(r"[^A-Za-z0-9_-]")
_TRANSIENT = {"ThrottlingException", "TooManyRequestsException", "ServerException", "ServiceUnavailable"}
OPEN_STATUSES = ("planned", "sharded")  # a run that may still be given its jobs
# a job worth waiting for: one that ended (or failed) would fail, or not hold back, what depends on it
PENDING = ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING")


@dataclass(frozen=True)
class JobSettings:
    queue: str
    shard_definition: str
    reduce_definition: str
    name_prefix: str
    actions_per_run: int = 10_000_000  # what one reduce applies well inside its timeout (README)
    max_runs: int = 8  # runs one submission may chain (a backlog clears over several hours)


def job_settings_from_env() -> JobSettings:
    prefix = env_str("NAME_PREFIX", "witple-batch") or "witple-batch"
    return JobSettings(
        queue=env_required("JOB_QUEUE"),
        shard_definition=env_str("SHARD_JOB_DEFINITION") or f"{prefix}-shard",
        reduce_definition=env_str("REDUCE_JOB_DEFINITION") or f"{prefix}-reduce",
        name_prefix=prefix,
        actions_per_run=env_int("MAX_ACTIONS_PER_RUN", 10_000_000, minimum=1),
        max_runs=env_int("MAX_RUNS_PER_SUBMIT", 8, minimum=1, maximum=100),
    )


def coordinator_batch_id(job_id: str) -> str | None:
    """The run id of a coordinator started by Batch: its job id, stable across its attempts."""
    return None if job_id == "local" else f"run-{job_id.replace(':', '-')}"


def job_name(settings: JobSettings, kind: str, batch_id: str) -> str:
    """`<prefix>-<kind>-<BATCH_ID>` in Batch's alphabet, at most 128 characters (a hash keeps
    long ids apart)."""
    name = _JOB_NAME_CHARS.sub("_", f"{settings.name_prefix}-{kind}-{batch_id}")
    if len(name) <= 128:
        return name
    return f"{name[:111]}-{hashlib.sha256(batch_id.encode()).hexdigest()[:16]}"


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
    import boto3
    from botocore.config import Config

    config = Config(region_name=region, retries={"total_max_attempts": 1}, connect_timeout=10, read_timeout=60)
    return boto3.session.Session().client("batch", config=config)


@_retried
def find_job(batch: Any, queue: str, name: str, batch_id: str) -> str | None:
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
        if {"name": "BATCH_ID", "value": batch_id} in environment:
            return job_id
    return None


def job_status(batch: Any, job_id: str) -> str:
    [job] = batch.describe_jobs(jobs=[job_id])["jobs"]
    return str(job["status"])


@_retried
def find_or_submit(batch: Any, settings: JobSettings, request: dict[str, Any]) -> tuple[str, bool]:
    """(job id, whether this call submitted it). Looked up again before every try: a try whose
    answer was lost may have submitted the job."""
    batch_id = _batch_id_of(request)
    if (existing := find_job(batch, settings.queue, request["jobName"], batch_id)) is not None:
        return existing, False
    return batch.submit_job(**request)["jobId"], True


def _batch_id_of(request: dict[str, Any]) -> str:
    return next(e["value"] for e in request["containerOverrides"]["environment"] if e["name"] == "BATCH_ID")


def _environment(config: CommonConfig, batch_id: str) -> list[dict[str, str]]:
    return [
        {"name": "BATCH_ID", "value": batch_id},
        {"name": "S3_BUCKET", "value": config.s3_bucket},
        {"name": "S3_PREFIX", "value": config.s3_prefix},
    ]


def shard_request(settings: JobSettings, config: CommonConfig, batch_id: str, shards: int) -> dict[str, Any]:
    """An array job from 2 children (Batch's minimum size), a plain job for one."""
    request = {
        "jobName": job_name(settings, "shard", batch_id),
        "jobQueue": settings.queue,
        "jobDefinition": settings.shard_definition,
        "containerOverrides": {"environment": _environment(config, batch_id)},
    }
    return {**request, "arrayProperties": {"size": shards}} if shards > 1 else request


def reduce_request(settings: JobSettings, config: CommonConfig, batch_id: str, after: list[str]) -> dict[str, Any]:
    """The reduce, after its shard job (and the previous run's reduce in a chain)."""
    return {
        "jobName": job_name(settings, "reduce", batch_id),
        "jobQueue": settings.queue,
        "jobDefinition": settings.reduce_definition,
        "dependsOn": [{"jobId": job_id} for job_id in after],
        "containerOverrides": {"environment": _environment(config, batch_id)},
    }


def run_id(batch_id: str, index: int) -> str:
    """The id of the index-th run of one submission: BATCH_ID, then BATCH_ID-1, BATCH_ID-2, ..."""
    return batch_id if index == 0 else validate_batch_id(f"{batch_id}-{index}")


def submit(s3: Any, batch: Any, config: CommonConfig, settings: JobSettings, options: PlanOptions) -> dict[str, Any]:
    """Runs of at most `settings.actions_per_run` actions each (by the counts in the file names),
    until the new files run out, `options.max_records` is reached or `settings.max_runs` runs are
    planned: each run's shard job starts at once, each reduce after its shards and the previous
    reduce, so every transaction stays the size one reduce applies inside its timeout however
    large the backlog. Returns the first run's result with every run under "runs"."""
    runs: list[dict[str, Any]] = []
    taken, previous_reduce = 0, None
    run_id(options.batch_id, settings.max_runs - 1)  # every id of the chain valid before anything is submitted
    for index in range(settings.max_runs):
        cap = settings.actions_per_run
        if options.max_records is not None:
            cap = min(cap, options.max_records - taken)
        if cap <= 0:
            break
        run_options = replace(
            options,
            batch_id=run_id(options.batch_id, index),
            max_records=cap,
            lease_hours=options.lease_hours + index,  # a run later in the chain waits longer for its reduce
            settle=index == 0,  # past runs are settled once per submission
        )
        after = previous_reduce if previous_reduce and job_status(batch, previous_reduce) in PENDING else None
        result = submit_run(s3, batch, config, settings, run_options, after)
        runs.append(result)
        if result["shards"] == 0 or not result["more"] or options.dry_run:
            break
        taken += result["actions_named"]
        previous_reduce = result["reduce_job_id"]
    metrics.emit("coordinator", {"Runs": sum(1 for r in runs if r["shards"]), "Files": sum(r["files"] for r in runs)})
    return {**runs[0], "runs": runs}


def submit_run(
    s3: Any,
    batch: Any,
    config: CommonConfig,
    settings: JobSettings,
    options: PlanOptions,
    after: str | None,
) -> dict[str, Any]:
    """One run: plan (or resume the recorded plan), then make sure both jobs exist, the reduce
    after its shards and after the reduce `after`; the result names them and lists the ids this
    call submitted."""
    planned = plan(s3, config, options)
    batch_id, shards = planned["batch_id"], planned["shards"]
    result: dict[str, Any] = {**planned, "shard_job_id": None, "reduce_job_id": None, "submitted": []}
    if shards == 0:
        event(log, "nothing new to process; no jobs submitted", batch_id=batch_id)
        return result
    if options.dry_run:
        shard = shard_request(settings, config, batch_id, shards)
        result["would_submit"] = [shard, reduce_request(settings, config, batch_id, ["<shard job id>"])]
        return result
    may_submit = planned.get("resumed") in (None, *OPEN_STATUSES)

    def ensure(request: dict[str, Any]) -> str | None:
        if not may_submit:  # an ended run: report its jobs, never start new ones
            return find_job(batch, settings.queue, request["jobName"], batch_id)
        job_id, new = find_or_submit(batch, settings, request)
        if new:
            result["submitted"].append(job_id)
        return job_id

    result["shard_job_id"] = shard_id = ensure(shard_request(settings, config, batch_id, shards))
    if shard_id is not None:
        waits_for = [shard_id] if after is None else [shard_id, after]
        result["reduce_job_id"] = ensure(reduce_request(settings, config, batch_id, waits_for))
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
