"""`python -m reduce_job [check | status | migrate | rebuild-vectors | consolidate]`: apply the partials of
BATCH_ID to PostgreSQL, then report and notify; and the operators' views of it."""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import replace

import orjson

from witple_batch import preflight
from witple_batch.entrypoint import Failure, run_job
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

consolidate: carries every user's newest vector into all the places it acted on now (a run
does it after its notice once CONSOLIDATE_EVERY_HOURS have passed; README: Vectors).

check [--local]: settings, reading and writing the work prefix, the database reachable and
migrated; one line each, exit 0 or 2. --local: settings only (the image's HEALTHCHECK).

status [--last N] [--json]: the last runs as batch_runs holds them (state, notice, files,
actions, rejects, users, places, seconds per stage, webhook outcome, quarantined files), and
how many place neighbour lists wait for a run to remake them, and when the places were last
consolidated.

migrate [--dry-run]: applies the pending migrations (every job also does at start), or prints
what they would change and how many rows, changing nothing. On the main server's database the
first run adopts its user_behavior_vectors and place_vectors in place (README).

Environment: BATCH_ID, DATABASE_URL and PARTIALS_SECRET (required), S3_BUCKET, S3_PREFIX,
WORK_BUCKET, WORK_PREFIX, AWS_REGION, WEBHOOK_URL, WEBHOOK_SECRET, ACTION_WEIGHTS,
USER_VECTOR_INDEX (hnsw|none), PARTIALS_AHEAD, PLACE_NEIGHBOURS, NEIGHBOUR_PLACES_PER_RUN,
NEIGHBOUR_WINDOW, CONSOLIDATE_EVERY_HOURS, CONSOLIDATE_PAIRS_PER_CHUNK, CONSOLIDATE_SECONDS_PER_RUN,
WEBHOOK_ATTEMPTS,
WEBHOOK_TIMEOUT_SECONDS, DB_CONNECT_ATTEMPTS, DB_LOCK_TIMEOUT_SECONDS, DB_STATEMENT_TIMEOUT_SECONDS,
JOB_ATTEMPTS, JOB_TIMEOUT_SECONDS, LOG_LEVEL (README: Configuration).
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
    preflight.reachable(s3_client(config.common.region, max_attempts=2), config.common)
    run_reduce(s3_client(config.common.region), config)
    return 0


def _rebuild() -> int:
    from reduce_job.rebuild import rebuild_vectors

    result = rebuild_vectors()
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    return 0


def _consolidate() -> int:
    from reduce_job.config import consolidation_settings
    from reduce_job.consolidate import consolidate
    from witple_batch.settings import common_from_env

    to_the_end = replace(consolidation_settings(), seconds_per_run=None)
    sys.stdout.write(orjson.dumps(consolidate(common_from_env(), to_the_end)).decode() + "\n")
    return 0


def _migrate(dry_run: bool) -> int:
    from witple_batch.database import connect_for
    from witple_batch.schema import migrate, plan
    from witple_batch.settings import common_from_env

    with connect_for(common_from_env(), "reduce_job.migrate") as conn:
        if not dry_run:
            applied = migrate(conn)
            sys.stdout.write(f"applied: {', '.join(f'{v:03d}' for v in applied) or 'nothing (up to date)'}\n")
            return 0
        pending = plan(conn)
        lines = [] if pending else ["schema up to date: nothing would change"]
        for migration, steps in pending:
            lines.append(f"{migration.version:03d} {migration.name}: {len(steps)} step(s)")
            lines += [f"  - {s.description}" + ("" if s.rows is None else f" [{s.rows} rows]") for s in steps]
        sys.stdout.write("\n".join(lines) + "\n")
    return 0


def _check(local: bool) -> int:
    from reduce_job.config import reduce_config_from_env

    common, settings = preflight.settings_check(lambda env: reduce_config_from_env(env).common)
    if common is None or local:
        return preflight.report([settings])
    client = s3_client(common.region, max_attempts=2)
    checks = [
        *preflight.s3_checks(client, common, list_input=False, write_work=True),
        preflight.database_check(common, "reduce_job.check"),
    ]
    return preflight.report([settings, *preflight.run_checks(checks)])


def _status(last: int, as_json: bool) -> int:
    from reduce_job.status import consolidation, neighbour_lists, recent_runs, table
    from witple_batch.database import connect_for
    from witple_batch.settings import common_from_env

    with connect_for(common_from_env(), "reduce_job.status") as conn:
        runs = recent_runs(conn, last)
        lists, places = neighbour_lists(conn), consolidation(conn)
    sys.stdout.write((orjson.dumps(runs).decode() if as_json else f"{table(runs)}\n{lists}\n{places}") + "\n")
    return 0


def _failed(failure: Failure) -> None:
    """Before commit: on the last attempt or a permanent error, the run is failed and FAILED is sent once."""
    from witple_batch.notices import on_job_failure

    on_job_failure("reduce", failure, {})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m reduce_job", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("rebuild-vectors", help="recompute every vector from the tables (prints one JSON line)")
    sub.add_parser("consolidate", help="bring every place up to date with its users' vectors (prints one JSON line)")
    migrate = sub.add_parser("migrate", help="apply pending migrations, or print what they would change")
    migrate.add_argument("--dry-run", action="store_true", help="print the plan (steps, rows) and change nothing")
    check = sub.add_parser("check", help="settings, S3 work prefix and database as the reduce needs them (exit 0 or 2)")
    check.add_argument("--local", action="store_true", help="settings only, no network (HEALTHCHECK)")
    status = sub.add_parser("status", help="the last runs from batch_runs: state, counts, seconds, webhook")
    status.add_argument("--last", type=int, default=10, help="how many runs, newest first (default 10)")
    status.add_argument("--json", action="store_true", help="one JSON array instead of the table")
    args = parser.parse_args(argv)
    from witple_batch.database import PERMANENT_DATABASE_ERRORS

    if args.command == "migrate":
        return run_job("reduce_job.migrate", lambda: _migrate(args.dry_run), permanent_errors=PERMANENT_DATABASE_ERRORS)
    if args.command == "check":
        return run_job("reduce_job.check", lambda: _check(args.local))
    if args.command == "status":
        if not 1 <= args.last <= 1000:
            parser.error("--last must be between 1 and 1000")
        return run_job("reduce_job.status", lambda: _status(args.last, args.json))
    if args.command == "consolidate":
        return run_job("reduce_job.consolidate", _consolidate, permanent_errors=PERMANENT_DATABASE_ERRORS)
    if args.command == "rebuild-vectors":
        return run_job("reduce_job.rebuild", _rebuild, permanent_errors=PERMANENT_DATABASE_ERRORS)
    return run_job("reduce_job", _work, on_failure=_failed, permanent_errors=PERMANENT_DATABASE_ERRORS)
