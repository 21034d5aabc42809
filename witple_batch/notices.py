"""A run's completion notice: SUCCEEDED from the reduce after commit, FAILED from whichever job
failed for good. Notices follow states, never the other way round: under the run's notice
lock the sender reads the state, sends only what it allows (SUCCEEDED from committed, FAILED
from failed, once), and records what happened. Without the database there is no state to
follow, so no notice: the EventBridge rule on failed Batch jobs covers that case.

A job killed before it records its notice leaves it owed, and the next plan sends it: so a
notice delivered just before such a kill is sent again. Delivery is at least once, never
contradicting the database; the Idempotency-Key (`<batch_id>:<status>`) lets the receiver drop
the repeat.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any

import psycopg

from witple_batch import metrics, run_state, webhook
from witple_batch.config import CommonConfig, common_from_env, required_batch_id
from witple_batch.database import DatabaseUnavailable, connect_for
from witple_batch.entrypoint import Failure
from witple_batch.logs import event, mask_secrets
from witple_batch.run_layout import RunLayout
from witple_batch.settings import ConfigError

log = logging.getLogger(__name__)

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


@dataclass(frozen=True)
class Delivery:
    """How a notice went: the webhook's outcome, or why none was sent."""

    sent: bool
    webhook_status: str | None  # delivered | failed | not_configured; None when not sent
    reason: str | None = None


def _allowed(run: run_state.Run | None, status: str) -> str | None:
    """None when the state allows this notice now, else why not."""
    if run is None:
        return "the run is not in the database"
    if run.notice is not None:
        return f"{run.notice} was already sent for this run"
    wanted = "committed" if status == webhook.SUCCEEDED else "failed"
    if run.status != wanted:
        return f"the run is {run.status}, not {wanted}"
    return None


def notify(conn: psycopg.Connection, common: CommonConfig, batch_id: str, body: dict[str, Any]) -> Delivery:
    """Send `body` (its job_status says which notice) if the run's state allows it; record the outcome."""
    status = body["job_status"]
    run_state.lock_notice(conn, batch_id)
    try:
        refused = _allowed(run_state.get(conn, batch_id), status)
        if refused is not None:
            event(log, "no notice sent", batch_id=batch_id, job_status=status, reason=refused)
            return Delivery(False, None, refused)
        outcome, attempts, error = "not_configured", 0, None
        if common.webhook_url is not None:
            delivery = webhook.send(
                common.webhook_url,
                body,
                secret=common.webhook_secret,
                attempts=common.webhook_attempts,
                timeout=common.webhook_timeout,
            )
            outcome = "delivered" if delivery.delivered else "failed"
            attempts, error = delivery.attempts, delivery.error
        if run_state.record_notice(conn, batch_id, status, outcome, attempts, error):  # once per run
            counted = "BatchesSucceeded" if status == "SUCCEEDED" else "BatchesFailed"
            metrics.emit("notice", {counted: 1, "WebhookFailures": int(outcome == "failed")})
        return Delivery(True, outcome)
    finally:
        run_state.unlock_notice(conn, batch_id)


def success_body(
    common: CommonConfig, batch_id: str, stats: dict[str, Any], seconds: float, *, already_committed: bool
) -> dict[str, Any]:
    """SUCCEEDED as the main server's contract has it, from a committed run's stats."""
    layout = RunLayout(common.work_bucket, common.work_prefix, batch_id)
    metadata = {name: stats.get(stat, 0) for name, stat in METADATA.items()}
    metadata["envelope_batch_ids"] = stats.get("envelope_batch_ids", [])  # at most 1000: report.json has all
    return webhook.payload(
        job_id=common.job_id,
        job_name=common.job_name,
        status=webhook.SUCCEEDED,
        batch_id=batch_id,
        processed_records=int(stats.get("records_accepted", 0)),
        processing_time_seconds=seconds,
        s3_input_path=common.s3_input_path,
        error_message=None,
        metadata={**metadata, "already_committed": already_committed, "report_uri": layout.uri(layout.report_key)},
    )


def failure_body(
    common: CommonConfig, batch_id: str, message: str, seconds: float, metadata: dict[str, Any]
) -> dict[str, Any]:
    return webhook.payload(
        job_id=common.job_id,
        job_name=common.job_name,
        status=webhook.FAILED,
        batch_id=batch_id,
        processed_records=0,
        processing_time_seconds=seconds,
        s3_input_path=common.s3_input_path,
        error_message=message,
        metadata=metadata,
    )


def settle(common: CommonConfig, batch_id: str, message: str, seconds: float, metadata: dict[str, Any]) -> Delivery:
    """A job failed for good: record the run failed unless it committed, then send what the state
    calls for: FAILED for a failed run, SUCCEEDED for one that committed before the failure."""
    if common.database_url is None:
        event(log, "no notice: DATABASE_URL is not set, so the failure cannot be recorded", logging.ERROR)
        return Delivery(False, None, "no database")
    try:
        with connect_for(common, "witple-notice") as conn:
            run_state.fail(conn, batch_id, mask_secrets(message))
            run = run_state.get(conn, batch_id)
            if run is not None and run.status == "committed":
                body = success_body(common, batch_id, run.stats, seconds, already_committed=True)
            else:
                body = failure_body(common, batch_id, message, seconds, metadata)
            return notify(conn, common, batch_id, body)
    except (DatabaseUnavailable, psycopg.Error) as exc:
        event(
            log,
            "no notice: the failure cannot be recorded",
            logging.ERROR,
            batch_id=batch_id,
            error=mask_secrets(str(exc)).strip(),
        )
        return Delivery(False, None, "database unavailable")


def on_job_failure(stage: str, failure: Failure, metadata: dict[str, Any]) -> None:
    """What a failed job does: nothing when Batch will try again; on a final failure (final, or
    the last attempt), settle the run and send its one notice. Out of time, it makes one try at
    each (Batch kills the container about 30 s after the SIGTERM); the planner sends what is
    still owed on its next run (plan.settle_past_runs)."""
    try:
        common = common_from_env()
        batch_id = required_batch_id()
    except ConfigError as exc:  # the settings themselves are broken: no run to record, nowhere to send
        event(log, f"no notice: {exc}", logging.ERROR)
        return
    if failure.out_of_time:
        common = replace(
            common, db_connect_attempts=1, webhook_attempts=1, webhook_timeout=min(common.webhook_timeout, 5.0)
        )
    message, seconds = failure.message, failure.seconds
    if not (failure.final or common.last_attempt):
        event(
            log,
            "failure will be retried by Batch; no notice sent",
            attempt=common.attempt,
            attempts=common.job_attempts,
        )
        return
    settle(
        common,
        batch_id,
        f"{stage} failed on attempt {common.attempt}/{common.job_attempts}: {message}",
        seconds,
        {"stage": stage, "attempt": common.attempt, "attempts": common.job_attempts, **metadata},
    )
