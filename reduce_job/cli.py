"""`python -m reduce_job`: merge the partials of BATCH_ID into PostgreSQL, then report and notify."""

from __future__ import annotations

import argparse
import logging
import time

import psycopg

from reduce_job.config import ReduceConfig, reduce_config_from_env
from witple_batch import webhook
from witple_batch.config import common_from_env
from witple_batch.database import DatabaseUnavailable, connect
from witple_batch.entrypoint import run_job
from witple_batch.logs import event
from witple_batch.s3 import s3_client
from witple_batch.settings import ConfigError, env_str

DESCRIPTION = """\
Reads runs/<BATCH_ID>/manifest.json and every shard's partial from the work location,
checks markers and checksums, merges them, and applies the batch to PostgreSQL in one
transaction (ledger, COPY into staging, INSERT .. ON CONFLICT merge, vector indexes).
Then writes runs/<BATCH_ID>/report.json and POSTs the webhook. Rerunning a committed
batch changes nothing and does not resend a delivered webhook.

Environment: BATCH_ID and DATABASE_URL (required), S3_BUCKET, S3_PREFIX, WORK_BUCKET,
WORK_PREFIX, AWS_REGION, WEBHOOK_URL, WEBHOOK_SECRET, USER_VECTOR_INDEX (hnsw|none),
INDEX_REBUILD_FRACTION, WEBHOOK_ATTEMPTS, WEBHOOK_TIMEOUT_SECONDS, DB_CONNECT_ATTEMPTS.
Exit codes: 0 done (also when only the webhook failed), 2 configuration or permanent
error (overlapping files), 1 anything else (worth a retry).
"""

log = logging.getLogger(__name__)
_state: dict[str, ReduceConfig] = {}


def _work() -> int:
    from reduce_job.run import finish, run_reduce

    started = time.monotonic()
    config = reduce_config_from_env()
    _state["config"] = config
    client = s3_client(config.common.region)
    outcome = run_reduce(client, config)
    finish(client, config, outcome, time.monotonic() - started)
    return 0


def _failed(message: str, _final: bool, seconds: float) -> None:
    """Before commit: record the failure and tell the main server (best effort: it may be the DB that failed)."""
    from reduce_job import ledger

    config = _state.get("config")
    if config is None:  # the settings themselves failed: notify if the common ones allow it
        try:
            common = common_from_env()
        except ConfigError:
            return
        webhook.send_failed(common, env_str("BATCH_ID", "unknown") or "unknown", message, seconds, {"stage": "reduce"})
        return
    try:
        with connect(config.database_url, attempts=1, autocommit=True) as conn:
            ledger.record_failure(conn, config.batch_id, time.time() - seconds, message)
    except (DatabaseUnavailable, psycopg.Error) as exc:  # the database may be what failed
        event(log, f"failure not recorded in batch_runs: {exc}", logging.WARNING)
    webhook.send_failed(
        config.common,
        config.batch_id,
        message,
        seconds,
        {"stage": "reduce"},
        attempts=config.webhook_attempts,
        timeout=config.webhook_timeout,
    )


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(
        prog="python -m reduce_job", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    ).parse_args(argv)
    return run_job("reduce_job", _work, on_failure=_failed)
