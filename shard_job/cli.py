"""`python -m shard_job [plan | quarantine]`: the array child, the planner, the operators' quarantine view."""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import replace

import orjson

from witple_batch.config import common_from_env, new_batch_id, validate_batch_id
from witple_batch.entrypoint import Failure, run_job
from witple_batch.logs import event
from witple_batch.s3 import s3_client
from witple_batch.settings import ConfigError, env_str

DESCRIPTION = """\
Array child (default): reads its file list runs/<BATCH_ID>/plan/<index>.json, processes
shard AWS_BATCH_JOB_ARRAY_INDEX (default 0) and writes its partial under
runs/<BATCH_ID>/shards/<index>/ on the work location.

plan: lists s3://$S3_BUCKET/$S3_PREFIX, claims the files no run holds and the ledger
does not have (DATABASE_URL required unless --no-ledger), splits them into shards balanced
by bytes and writes the plan; prints {batch_id, shards, files, bytes, manifest_uri}.

quarantine: lists the files set aside (over a limit, or they stopped a child), or releases
one so the next plan reads it again.
"""

log = logging.getLogger(__name__)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m shard_job", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command")
    plan = sub.add_parser("plan", help="plan a run (prints one JSON line)")
    size = plan.add_mutually_exclusive_group()
    size.add_argument("--shards", type=int, help="number of shards (array size)")
    size.add_argument(
        "--target-mb-per-shard", type=float, default=64.0, help="bytes per shard when --shards is not given"
    )
    plan.add_argument("--since", help="first partition hour to include, e.g. 2025-01-15T14 (inclusive)")
    plan.add_argument("--until", help="partition hour to stop before (exclusive)")
    plan.add_argument("--max-files", type=int, help="take at most this many files (oldest keys first)")
    plan.add_argument("--batch-id", help="run id (default: $BATCH_ID, else generated)")
    plan.add_argument("--lease-hours", type=float, default=8.0, help="how long the run holds its files (default 8)")
    plan.add_argument(
        "--refresh-per-shard",
        type=int,
        default=2_000,
        help="places embedded by another model or text version that each child re-embeds (default 2000)",
    )
    plan.add_argument("--dry-run", action="store_true", help="print the plan without claiming or writing")
    plan.add_argument(
        "--no-ledger", action="store_true", help="plan without the database: nothing excluded, nothing claimed"
    )
    quarantine = sub.add_parser("quarantine", help="list or release quarantined files (DATABASE_URL)")
    what = quarantine.add_mutually_exclusive_group(required=True)
    what.add_argument("--list", action="store_true", help="print every quarantined file as one JSON line")
    what.add_argument("--release", metavar="KEY", help="take KEY out of the ledger so the next plan reads it")
    return parser.parse_args(argv)


def _plan(args: argparse.Namespace) -> int:
    from shard_job.plan import PlanOptions, plan
    from shard_job.planning import parse_hour

    config = common_from_env()
    batch_id = validate_batch_id(args.batch_id or env_str("BATCH_ID") or new_batch_id())
    if args.shards is not None and not 1 <= args.shards <= 10_000:
        raise ConfigError("--shards must be between 1 and 10000")
    if args.max_files is not None and args.max_files < 1:
        raise ConfigError("--max-files must be >= 1")
    if not 0 < args.lease_hours <= 72:
        raise ConfigError("--lease-hours must be above 0 and at most 72")
    try:
        since = parse_hour(args.since) if args.since else None
        until = parse_hour(args.until) if args.until else None
    except ValueError as exc:
        raise ConfigError(f"--since/--until: {exc}") from None
    if args.refresh_per_shard < 0:
        raise ConfigError("--refresh-per-shard must be >= 0")
    client = s3_client(config.region)
    options = PlanOptions(
        batch_id,
        args.shards,
        args.target_mb_per_shard,
        since,
        until,
        args.max_files,
        dry_run=args.dry_run,
        use_ledger=not args.no_ledger,
        lease_hours=args.lease_hours,
        refresh_per_shard=args.refresh_per_shard,
    )
    result = plan(client, config, options)
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    return 0


def _quarantine(args: argparse.Namespace) -> int:
    from witple_batch import run_state
    from witple_batch.database import connect_for

    with connect_for(common_from_env(), "shard_job.quarantine") as conn:
        if args.list:
            for row in run_state.quarantined(conn):
                sys.stdout.write(orjson.dumps(row).decode() + "\n")
            return 0
        if not run_state.release(conn, args.release):
            raise ConfigError(f"{args.release} is not quarantined")
        event(log, "released from quarantine; the next plan reads it again", key=args.release)
    return 0


def _child() -> int:
    from shard_job.child import run_shard
    from shard_job.config import shard_config_from_env

    config = shard_config_from_env()
    for warning in config.common.warnings():
        event(log, warning, logging.WARNING)
    run_shard(s3_client(config.common.region, pool=config.download_concurrency + 4), config)
    return 0


def _child_failed(failure: Failure) -> None:
    """Batch never starts the reduce after a child fails for good, so the child reports the run failed."""
    from witple_batch.notices import on_job_failure

    index = env_str("AWS_BATCH_JOB_ARRAY_INDEX", "0") or "0"
    on_job_failure("shard", replace(failure, message=f"shard {index}: {failure.message}"), {"shard": index})


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from witple_batch.database import PERMANENT_DATABASE_ERRORS

    if args.command == "plan":
        return run_job("shard_job.plan", lambda: _plan(args), permanent_errors=PERMANENT_DATABASE_ERRORS)
    if args.command == "quarantine":
        return run_job("shard_job.quarantine", lambda: _quarantine(args))
    return run_job("shard_job", _child, on_failure=_child_failed, permanent_errors=PERMANENT_DATABASE_ERRORS)
