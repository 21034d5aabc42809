"""`python -m shard_job [plan]`: the planner and the array child."""

from __future__ import annotations

import argparse
import os
import sys

import orjson

from witple_batch.config import common_from_env, new_batch_id, validate_batch_id
from witple_batch.entrypoint import run_job
from witple_batch.s3 import s3_client
from witple_batch.settings import ConfigError, env_str

DESCRIPTION = """\
Array child (default): reads runs/<BATCH_ID>/manifest.json, processes shard
AWS_BATCH_JOB_ARRAY_INDEX (default 0) and writes its partial under
runs/<BATCH_ID>/shards/<index>/ on the work location.

plan: lists s3://$S3_BUCKET/$S3_PREFIX, leaves out files already in the ledger
(when DATABASE_URL is set), splits the rest into shards balanced by bytes and
writes the run manifest; prints {batch_id, shards, files, bytes, manifest_uri}.
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m shard_job", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command")
    plan = sub.add_parser("plan", help="plan a run into a manifest (prints one JSON line)")
    size = plan.add_mutually_exclusive_group()
    size.add_argument("--shards", type=int, help="number of shards (array size)")
    size.add_argument(
        "--target-mb-per-shard", type=float, default=64.0, help="bytes per shard when --shards is not given"
    )
    plan.add_argument("--since", help="first partition hour to include, e.g. 2025-01-15T14 (inclusive)")
    plan.add_argument("--until", help="partition hour to stop before (exclusive)")
    plan.add_argument("--max-files", type=int, help="take at most this many files (oldest keys first)")
    plan.add_argument("--batch-id", help="run id (default: $BATCH_ID, else generated)")
    plan.add_argument("--dry-run", action="store_true", help="print the plan without writing the manifest")
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
    try:
        since = parse_hour(args.since) if args.since else None
        until = parse_hour(args.until) if args.until else None
    except ValueError as exc:
        raise ConfigError(f"--since/--until: {exc}") from None
    options = PlanOptions(batch_id, args.shards, args.target_mb_per_shard, since, until, args.max_files, args.dry_run)
    result = plan(s3_client(config.region), config, options)
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    return 0


def _child() -> int:
    from shard_job.child import run_shard
    from shard_job.config import shard_config_from_env

    config = shard_config_from_env()
    run_shard(s3_client(config.common.region, pool=config.download_concurrency + 4), config)
    return 0


def _child_failed(message: str, final: bool, seconds: float) -> None:
    """Batch never starts the reduce after a child fails for good, so the child tells the main server."""
    from shard_job.failure import notify_failure

    notify_failure(os.environ, message, final, seconds)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.command == "plan":
        return run_job("shard_job.plan", lambda: _plan(args))
    return run_job("shard_job", _child, on_failure=_child_failed)
