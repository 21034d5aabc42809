"""How a run is told: its report, then the one notice its state calls for.

`conclude` is the only way: the reduce calls it after its commit, a job that fails for good
calls it (on_job_failure), and the coordinator calls it for runs that ended without one (a
lease that expired, a job killed before its notice). Notices follow states, never the other way
round: under the run's notice lock it reads the state, writes report.json for an applied run
(from what the database holds, so it is the same whoever writes it), sends SUCCEEDED for a
committed run or FAILED for a failed one, once, and records what happened. Without the database
there is no state to follow, so no notice: the EventBridge rule on failed Batch jobs covers that.

A job killed after its POST but before recording it leaves the notice owed, and the next plan
sends it again: delivery is at least once, never contradicting the database; the
Idempotency-Key (`<run id>:<status>`) lets the receiver drop the repeat.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import orjson
import psycopg
from botocore.exceptions import BotoCoreError, ClientError

from witple_batch import metrics, run_state, webhook
from witple_batch.database import DatabaseUnavailable, connect_for
from witple_batch.entrypoint import Failure
from witple_batch.errors import ConfigError
from witple_batch.logs import event, mask_secrets
from witple_batch.run_layout import RunLayout
from witple_batch.run_state import Notice, WebhookOutcome
from witple_batch.s3 import s3_client
from witple_batch.settings import CommonConfig, common_from_env, required_run_id
from witple_batch.webhook import Delivery

log = logging.getLogger(__name__)

ENVELOPE_IDS_IN_NOTICE = 1000  # the notice names at most this many; report.json names them all

# the SUCCEEDED notice's metadata: name in the notice -> name in the run's stats
METADATA = {
    "files": "files",
    "files_rejected": "files_rejected",
    "files_quarantined": "files_quarantined",
    "files_deferred": "files_deferred",
    "records_read": "records_read",
    "rejects": "records_rejected",
    "users": "users",
    "places": "places",
    "places_uncatalogued": "places_uncatalogued",
    "users_held_back": "users_held_back",
    "users_released": "users_released",
    "users_pending": "users_pending",
    "shard_count": "shards",
    "envelope_batch_ids_total": "envelope_batch_ids_total",
}


def conclude(
    conn: psycopg.Connection,
    client: Any,
    common: CommonConfig,
    run_id: str,
    *,
    by: str,
    failure: str | None = None,
    seconds: float = 0.0,
    metadata: Mapping[str, Any] | None = None,
    already_committed: bool = False,
) -> Delivery:
    """Report, then notify, as the run's state calls for; `by` names the job that does it. With
    `failure` (a job failed for good) the run is first recorded failed, unless it committed: then
    it is told SUCCEEDED, never FAILED, even when its report cannot be written (this is the job's
    last word). `seconds` and `metadata` describe the failing job for a FAILED notice."""
    if failure is not None:
        run_state.fail(conn, run_id, mask_secrets(failure))
    run_state.lock_notice(conn, run_id)
    try:
        run = run_state.get(conn, run_id)
        applied = run is not None and run.status in run_state.APPLIED
        if applied:
            try:
                write_report(client, RunLayout(common.work_bucket, common.work_prefix, run_id), conn, run, by)  # type: ignore[arg-type]
            except (ClientError, BotoCoreError) as exc:
                if failure is None:
                    raise  # the job fails, and its retry writes the report before the notice
                event(log, "report not written; the notice goes out without it", logging.ERROR, error=str(exc))
        notice = Notice.SUCCEEDED if applied else Notice.FAILED
        refused = run_state.notice_refused(run, notice)
        if refused is not None:
            event(log, "no notice sent", batch_id=run_id, job_status=notice.value, reason=refused)
            return Delivery(False, error=refused)
        assert run is not None  # notice_refused refuses a missing run
        if notice is Notice.SUCCEEDED:
            body = _succeeded(common, run, already_committed=already_committed or failure is not None)
        else:
            body = _failed(common, run, failure or run.error or "the run failed", seconds, metadata or {})
        delivery = Delivery(True, WebhookOutcome.NOT_CONFIGURED)
        if common.webhook_url is not None:
            delivery = webhook.post(
                common.webhook_url,
                body,
                secret=common.webhook_secret,
                attempts=common.webhook_attempts,
                timeout=common.webhook_timeout,
                backoff=common.webhook_backoff,
            )
        outcome = delivery.outcome or WebhookOutcome.NOT_CONFIGURED
        if run_state.record_notice(conn, run_id, notice, outcome, delivery.attempts, delivery.error):  # once per run
            counted = "BatchesSucceeded" if notice is Notice.SUCCEEDED else "BatchesFailed"
            metrics.emit("notice", {counted: 1, "WebhookFailures": int(outcome is WebhookOutcome.FAILED)})
        return delivery
    finally:
        run_state.unlock_notice(conn, run_id)


def write_report(client: Any, layout: RunLayout, conn: psycopg.Connection, run: run_state.Run, by: str) -> None:
    """report.json: what an applied run applied, for people and tools (the notice points to it),
    with every collection-server batch_id it applied."""
    report = {
        "batch_id": run.run_id,
        "status": Notice.SUCCEEDED.value,
        "stats": run.stats,
        "seconds": {k: round(float(v), 3) for k, v in run.seconds.items()},
        "envelope_batch_ids": run_state.envelope_ids(conn, run.run_id),
        "written_by": by,
    }
    client.put_object(
        Bucket=layout.work_bucket,
        Key=layout.report_key,
        Body=orjson.dumps(report, option=orjson.OPT_INDENT_2),
        ContentType="application/json",
    )


def _succeeded(common: CommonConfig, run: run_state.Run, *, already_committed: bool) -> dict[str, Any]:
    layout = RunLayout(common.work_bucket, common.work_prefix, run.run_id)
    metadata = {name: run.stats.get(stat, 0) for name, stat in METADATA.items()}
    metadata["envelope_batch_ids"] = run.stats.get("envelope_batch_ids", [])[:ENVELOPE_IDS_IN_NOTICE]
    return webhook.payload(
        job_id=common.job_id,
        job_name=common.job_name,
        status=Notice.SUCCEEDED,
        run_id=run.run_id,
        processed_records=int(run.stats.get("records_accepted", 0)),
        processing_time_seconds=sum(float(v) for v in run.seconds.values()),
        s3_input_path=common.s3_input_path,
        error_message=None,
        metadata={**metadata, "already_committed": already_committed, "report_uri": layout.uri(layout.report_key)},
    )


def _failed(
    common: CommonConfig, run: run_state.Run, message: str, seconds: float, metadata: Mapping[str, Any]
) -> dict[str, Any]:
    return webhook.payload(
        job_id=common.job_id,
        job_name=common.job_name,
        status=Notice.FAILED,
        run_id=run.run_id,
        processed_records=0,
        processing_time_seconds=seconds,
        s3_input_path=common.s3_input_path,
        error_message=message,
        metadata=dict(metadata),
    )


def on_job_failure(stage: str, failure: Failure, metadata: Mapping[str, Any]) -> None:
    """What a failed job does: nothing when Batch will try again; on a final failure (final, or
    the last attempt), conclude the run. Out of time, it makes one try at each (Batch kills the
    container about 30 s after the SIGTERM); the coordinator sends what is still owed later."""
    try:
        common = common_from_env()
        run_id = required_run_id()
    except ConfigError as exc:  # the settings themselves are broken: no run to record, nowhere to send
        event(log, f"no notice: {exc}", logging.ERROR)
        return
    if not (failure.final or common.last_attempt):
        event(
            log,
            "failure will be retried by Batch; no notice sent",
            attempt=common.attempt,
            attempts=common.job_attempts,
        )
        return
    if failure.out_of_time:
        common = replace(
            common, db_connect_attempts=1, webhook_attempts=1, webhook_timeout=min(common.webhook_timeout, 5.0)
        )
    if common.database_url is None:
        event(log, "no notice: DATABASE_URL is not set, so the failure cannot be recorded", logging.ERROR)
        return
    message = f"{stage} failed on attempt {common.attempt}/{common.job_attempts}: {failure.message}"
    details = {"stage": stage, "attempt": common.attempt, "attempts": common.job_attempts, **metadata}
    try:
        client = s3_client(common.region, max_attempts=2)
        with connect_for(common, "witple-notice") as conn:
            conclude(
                conn,
                client,
                common,
                run_id,
                by=stage,
                failure=message,
                seconds=failure.seconds,
                metadata=details,
            )
    except (DatabaseUnavailable, psycopg.Error) as exc:
        error = mask_secrets(str(exc)).strip()
        event(log, "no notice: the failure cannot be recorded", logging.ERROR, batch_id=run_id, error=error)
