"""`python -m shard_job [plan | submit | check | quarantine]`: the array child, the planner, the
coordinator, the preflight check, the operators' quarantine view."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import replace
from typing import TYPE_CHECKING

import orjson

from witple_batch import preflight
from witple_batch.config import common_from_env, new_batch_id, validate_batch_id
from witple_batch.entrypoint import Failure, run_job
from witple_batch.logs import event
from witple_batch.resources import process_age_seconds
from witple_batch.s3 import s3_client
from witple_batch.settings import ConfigError, env_str, partition_root

if TYPE_CHECKING:
    from shard_job.config import ShardConfig
    from shard_job.plan import PlanOptions
    from witple_batch.config import CommonConfig

DESCRIPTION = """\
Array child (default): reads its file list runs/<BATCH_ID>/plan/<index>.json, processes
shard AWS_BATCH_JOB_ARRAY_INDEX (default 0) and writes its partial under
runs/<BATCH_ID>/shards/<index>/ on the work location.

plan: lists s3://$S3_BUCKET/$S3_PREFIX, claims the files no run holds and the ledger
does not have (DATABASE_URL required unless --no-ledger), splits them into shards balanced
by bytes and writes the plan; prints {batch_id, shards, files, bytes, manifest_uri}.

submit: the coordinator. Plans (resuming the plan of a BATCH_ID planned before), then
submits the shard job (an array for N > 1, a plain job for 1, nothing for 0) and the reduce
depending on it on $JOB_QUEUE, each once per BATCH_ID; prints the plan with both job ids.
BATCH_ID defaults to one derived from AWS_BATCH_JOB_ID, so Batch's retries resume.

check [--local]: settings, model files against their sha256, listing the input, writing the
work prefix, the database reachable and migrated; one line each, exit 0 or 2. --local:
settings and model files only (the image's HEALTHCHECK).

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
    _plan_arguments(plan)
    plan.add_argument(
        "--no-ledger", action="store_true", help="plan without the database: nothing excluded, nothing claimed"
    )
    submit = sub.add_parser("submit", help="plan, then submit the shard array and the dependent reduce (JOB_QUEUE)")
    _plan_arguments(submit)
    main_server = submit.add_argument_group("the main server's submit_job parameters (Ref:: in the job definition)")
    main_server.add_argument("--input-bucket", help="read this bucket instead of $S3_BUCKET")
    main_server.add_argument("--input-prefix", help="read this prefix instead of $S3_PREFIX")
    main_server.add_argument(
        "--output-table",
        help="the table the main server asks for: only user_behavior_vectors (the one this job writes)",
    )
    check = sub.add_parser("check", help="settings, model files, S3 and database as a child needs them (exit 0 or 2)")
    check.add_argument("--local", action="store_true", help="settings and model files only, no network (HEALTHCHECK)")
    quarantine = sub.add_parser("quarantine", help="list or release quarantined files (DATABASE_URL)")
    what = quarantine.add_mutually_exclusive_group(required=True)
    what.add_argument("--list", action="store_true", help="print every quarantined file as one JSON line")
    what.add_argument("--release", metavar="KEY", help="take KEY out of the ledger so the next plan reads it")
    return parser.parse_args(argv)


def _plan_arguments(parser: argparse.ArgumentParser) -> None:
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--shards", type=int, help="number of shards (array size)")
    size.add_argument(
        "--target-mb-per-shard", type=float, default=64.0, help="bytes per shard when --shards is not given"
    )
    parser.add_argument("--since", help="first partition hour to include, e.g. 2025-01-15T14 (inclusive)")
    parser.add_argument("--until", help="partition hour to stop before (exclusive)")
    parser.add_argument("--max-files", type=int, help="take at most this many files (oldest keys first)")
    parser.add_argument(
        "--max-records",
        help="take files until their names' action counts reach this many (the main server's maxRecords; 0: all)",
    )
    parser.add_argument("--batch-id", help="run id (default: $BATCH_ID, else generated)")
    parser.add_argument("--lease-hours", type=float, default=8.0, help="how long the run holds its files (default 8)")
    parser.add_argument(
        "--refresh-per-shard",
        type=int,
        default=2_000,
        help="places embedded by another model or text version that each child re-embeds (default 2000)",
    )
    parser.add_argument(
        "--max-refresh-shards",
        type=int,
        default=8,
        help="children added, with no files, for such places beyond the file shards' shares (default 8)",
    )
    parser.add_argument(
        "--full",
        action="store_true",
        help="list every key under the prefix, not only the hours since the last plan (e.g. once a day)",
    )
    parser.add_argument(
        "--lookback-hours",
        type=float,
        default=24.0,
        help="hours before the watermark listed again, for files written late (default 24)",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the plan without claiming or writing")


def _given(value: str | None) -> str | None:
    """A Batch parameter the submitter left out reaches the command as the literal `Ref::name`."""
    return None if value is None or value.startswith("Ref::") or not value.strip() else value.strip()


def _max_records(value: str | None) -> int | None:
    if _given(value) is None:
        return None
    try:
        count = int(value)  # type: ignore[arg-type]
    except ValueError:
        raise ConfigError(f"--max-records (maxRecords) must be a whole number, got {value!r}") from None
    if count < 0:
        raise ConfigError("--max-records (maxRecords) must be >= 0")
    return count or None


def _plan_options(args: argparse.Namespace, batch_id: str) -> PlanOptions:
    from shard_job.model_source import ModelSource
    from shard_job.plan import PlanOptions
    from shard_job.planning import parse_hour

    if args.shards is not None and not 1 <= args.shards <= 10_000:
        raise ConfigError("--shards must be between 1 and 10000")
    if not 0 < args.target_mb_per_shard <= 1_048_576:  # NaN fails too
        raise ConfigError("--target-mb-per-shard must be above 0 and at most 1048576")
    if args.max_files is not None and args.max_files < 1:
        raise ConfigError("--max-files must be >= 1")
    if not 0 < args.lease_hours <= 72:
        raise ConfigError("--lease-hours must be above 0 and at most 72")
    try:
        since = parse_hour(args.since) if args.since else None
        until = parse_hour(args.until) if args.until else None
    except ValueError as exc:
        raise ConfigError(f"--since/--until: {exc}") from None
    if not 0 <= args.refresh_per_shard <= 100_000:
        raise ConfigError("--refresh-per-shard must be between 0 and 100000")
    if not 0 <= args.max_refresh_shards <= 1_000:
        raise ConfigError("--max-refresh-shards must be between 0 and 1000")
    if not 0 <= args.lookback_hours <= 24 * 31:
        raise ConfigError("--lookback-hours must be between 0 and 744")
    return PlanOptions(
        batch_id,
        args.shards,
        args.target_mb_per_shard,
        since,
        until,
        args.max_files,
        dry_run=args.dry_run,
        use_ledger=not getattr(args, "no_ledger", False),
        lease_hours=args.lease_hours,
        refresh_per_shard=args.refresh_per_shard,
        max_refresh_shards=args.max_refresh_shards,
        model=ModelSource.from_env(),  # read by the planner when it picks places to re-embed
        full=args.full,
        lookback_hours=args.lookback_hours,
        max_records=_max_records(args.max_records),
    )


def _plan(args: argparse.Namespace) -> int:
    from shard_job.plan import plan

    config = common_from_env()
    if not args.dry_run:
        config.partials_key  # noqa: B018 - required to sign the plan: checked before anything is claimed
    batch_id = validate_batch_id(args.batch_id or env_str("BATCH_ID") or new_batch_id())
    start = process_age_seconds()
    started = time.perf_counter()
    result = plan(s3_client(config.region), config, _plan_options(args, batch_id))
    result["seconds"] = {"start": round(start, 3), "plan": round(time.perf_counter() - started, 3)}
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    return 0


def _submit(args: argparse.Namespace) -> int:
    from shard_job.submit import (
        batch_client,
        coordinator_batch_id,
        job_settings_from_env,
        parse_output_table,
        submit,
    )

    deployed = common_from_env()
    bucket, input_prefix = _given(args.input_bucket), _given(args.input_prefix)
    # the ledger knows files by key, and the job roles may read only the deployed input: another
    # bucket, or a prefix outside S3_PREFIX, is refused here rather than half-read later
    if bucket is not None and bucket != deployed.s3_bucket:
        raise ConfigError(f"inputBucket must be the deployed input bucket {deployed.s3_bucket!r}, got {bucket!r}")
    if input_prefix is not None and not input_prefix.startswith(deployed.s3_prefix):
        raise ConfigError(f"inputPrefix must be under the deployed S3_PREFIX {deployed.s3_prefix!r}: {input_prefix!r}")
    config = replace(deployed, s3_prefix=partition_root("inputPrefix", input_prefix)) if input_prefix else deployed
    parse_output_table(_given(args.output_table))
    if not args.dry_run:
        config.partials_key  # noqa: B018 - required to sign the plans: checked before anything is claimed
    settings = job_settings_from_env()
    preflight.reachable(s3_client(config.region, max_attempts=2), config, list_input=True)
    batch_id = validate_batch_id(
        args.batch_id or env_str("BATCH_ID") or coordinator_batch_id(config.job_id) or new_batch_id()
    )
    options = replace(_plan_options(args, batch_id), resume=True)
    for warning in config.warnings():  # after every setting is known good: a bad one is the only line
        event(log, warning, logging.WARNING)
    batch = batch_client(config.region)
    result = submit(s3_client(config.region), batch, config, settings, options)
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    return 0


def _quarantine(args: argparse.Namespace) -> int:
    from shard_job import watermark
    from witple_batch import run_state
    from witple_batch.database import connect_for
    from witple_batch.run_layout import input_source

    config = common_from_env()
    with connect_for(config, "shard_job.quarantine") as conn:
        if args.list:
            for row in run_state.quarantined(conn):
                sys.stdout.write(orjson.dumps(row).decode() + "\n")
            return 0
        with conn.transaction():
            if not run_state.release(conn, args.release):
                raise ConfigError(f"{args.release} is not quarantined")
            listed = watermark.rewind(conn, input_source(config.s3_bucket, config.s3_prefix), args.release)
        event(
            log,
            "released from quarantine; the next plan reads it again"
            if listed
            else "released from quarantine; outside the hour partitions, the next `plan --full` reads it",
            key=args.release,
        )
    return 0


def _check(local: bool) -> int:
    from shard_job.config import shard_config_from_env

    shard: list[ShardConfig] = []

    def build(env: dict[str, str]) -> CommonConfig:
        shard.append(shard_config_from_env(env))
        return shard[0].common

    common, settings = preflight.settings_check(build)
    if common is None:
        return preflight.report([settings])
    source = shard[0].model
    if local:
        if source.model_uri is None:
            checks = [preflight.model_check(source.model_dir)]
        else:  # the HEALTHCHECK has no network: the child checks the files it fetches
            fetched = f"{source.model_uri}: fetched and checked by the child (check without --local)"
            checks = [("model", lambda: fetched)]
        return preflight.report([settings, *preflight.run_checks(checks)])
    client = s3_client(common.region, max_attempts=2)

    def model() -> str:
        with source.folder(client) as folder:  # the files the child would use, checked as it checks them
            return preflight.model_check(folder, shown=source.model_uri)[1]()

    checks = [("model", model), *preflight.s3_checks(client, common, list_input=True, write_work=True)]
    if common.database_url is not None:
        checks.append(preflight.database_check(common, "shard_job.check"))
    return preflight.report([settings, *preflight.run_checks(checks)])


def _child() -> int:
    from shard_job.fetch_process import FetchProcess

    with FetchProcess.started() as reader:  # its imports run while this process makes its own
        reader.killed_first_on_oom()
        from shard_job.child import run_shard
        from shard_job.config import shard_config_from_env

        config = shard_config_from_env()
        for warning in config.common.warnings():
            event(log, warning, logging.WARNING)
        preflight.reachable(s3_client(config.common.region, max_attempts=2), config.common)
        run_shard(s3_client(config.common.region), reader, config)
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
    if args.command == "submit":
        return run_job("shard_job.submit", lambda: _submit(args), permanent_errors=PERMANENT_DATABASE_ERRORS)
    if args.command == "check":
        return run_job("shard_job.check", lambda: _check(args.local))
    if args.command == "quarantine":
        return run_job("shard_job.quarantine", lambda: _quarantine(args))
    return run_job("shard_job", _child, on_failure=_child_failed, permanent_errors=PERMANENT_DATABASE_ERRORS)
