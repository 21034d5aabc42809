"""`python -m reduce_job [rebuild-vectors]`: apply the partials of BATCH_ID to PostgreSQL, then report and notify."""

from __future__ import annotations

import argparse
import logging
import sys

import orjson

from witple_batch.entrypoint import run_job
from witple_batch.logs import event
from witple_batch.s3 import s3_client

DESCRIPTION = """\
Reads runs/<BATCH_ID>/manifest.json and every shard's partial from the work location,
checks markers, checksums and coverage of the plan, stages the partials shard by shard,
and applies the batch to PostgreSQL in one transaction (interactions, totals, vectors,
ledger, run state). Then writes runs/<BATCH_ID>/report.json and sends the SUCCEEDED
notice. Rerunning a committed batch changes nothing and does not resend a delivered notice.

rebuild-vectors: recomputes every user and place vector from the interaction table and the
current content vectors (after changing ACTION_WEIGHTS, or to reset float32 drift).

Environment: BATCH_ID and DATABASE_URL (required), S3_BUCKET, S3_PREFIX, WORK_BUCKET,
WORK_PREFIX, AWS_REGION, WEBHOOK_URL, WEBHOOK_SECRET, ACTION_WEIGHTS, USER_VECTOR_INDEX
(hnsw|none), WEBHOOK_ATTEMPTS, WEBHOOK_TIMEOUT_SECONDS, DB_CONNECT_ATTEMPTS,
DB_LOCK_TIMEOUT_SECONDS, DB_STATEMENT_TIMEOUT_SECONDS, JOB_ATTEMPTS, LOG_LEVEL.
Exit codes: 0 done (also when only the webhook failed), 2 configuration or permanent
error (overlapping files, a bad partial), 1 anything else (worth a retry).
"""

log = logging.getLogger(__name__)


def _work() -> int:
    from reduce_job.config import reduce_config_from_env
    from reduce_job.run import run_reduce

    config = reduce_config_from_env()
    for warning in config.common.warnings():
        event(log, warning, logging.WARNING)
    run_reduce(s3_client(config.common.region), config)
    return 0


def _rebuild() -> int:
    from reduce_job.rebuild import rebuild_vectors

    result = rebuild_vectors()
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    return 0


def _failed(message: str, final: bool, seconds: float) -> None:
    """Before commit: on the last attempt or a permanent error, the run is failed and FAILED is sent once."""
    from witple_batch.notices import on_job_failure

    on_job_failure("reduce", message, final, seconds, {})


def _permanent_database_errors() -> tuple[type[BaseException], ...]:
    import psycopg

    # a wrong schema, a refused write or bad data fails the same way on every attempt
    return (psycopg.ProgrammingError, psycopg.DataError, psycopg.IntegrityError)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m reduce_job", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("rebuild-vectors", help="recompute every vector from the tables (prints one JSON line)")
    args = parser.parse_args(argv)
    if args.command == "rebuild-vectors":
        return run_job("reduce_job.rebuild", _rebuild, permanent_errors=_permanent_database_errors())
    return run_job("reduce_job", _work, on_failure=_failed, permanent_errors=_permanent_database_errors())
