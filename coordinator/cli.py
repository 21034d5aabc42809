"""`python -m coordinator [submit | plan | sync | quarantine]`: what starts runs, and the operators' quarantine view."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import replace
from typing import Any

import orjson
import psycopg

from coordinator.config import PlanOptions
from coordinator.sync import SyncOptions
from witple_batch import preflight
from witple_batch.catalogue import REMOVED_MOST
from witple_batch.entrypoint import run_job
from witple_batch.errors import ConfigError
from witple_batch.logs import event
from witple_batch.resources import process_age_seconds
from witple_batch.s3 import s3_client
from witple_batch.settings import CommonConfig, common_from_env, env_str, new_run_id, partition_root, validate_run_id

DESCRIPTION = """\
submit: the coordinator (the hourly schedule and the main server start it). Concludes past
runs that ended without their notice, plans a run (or resumes the one recorded for its
BATCH_ID), then submits its shard job (an array for N > 1, a plain job for 1, nothing for 0)
and the reduce depending on it on $JOB_QUEUE, each once per run; a backlog larger than
MAX_ACTIONS_PER_RUN becomes a chain of runs. BATCH_ID defaults to one derived from
AWS_BATCH_JOB_ID, so Batch's retries resume. Prints the first run with every run under "runs".

plan: the same plan without submitting (local runs, a workstation); prints one JSON line
{batch_id, shards, files, bytes, manifest_uri, ...}.

sync: plan a catalogue sync run without submitting it: the places whose content vector is
missing, of another space or made from changed catalogue fields, on children with no files
(`submit` plans one before its runs). For a first load or a new model, larger bounds.

quarantine: lists the files set aside (over a limit, or they stopped a child), or releases
one so the next plan reads it again.

Environment: DATABASE_URL and PARTIALS_SECRET (required), S3_BUCKET, S3_PREFIX, WORK_BUCKET,
WORK_PREFIX, AWS_REGION, MODEL_DIR or MODEL_URI (the children's model, for re-embedding),
JOB_QUEUE, NAME_PREFIX, SHARD_JOB_DEFINITION, REDUCE_JOB_DEFINITION, MAX_ACTIONS_PER_RUN,
MAX_RUNS_PER_SUBMIT (README: Configuration).
"""

log = logging.getLogger(__name__)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m coordinator", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    submit = sub.add_parser("submit", help="plan, then submit the shard array and the dependent reduce (JOB_QUEUE)")
    _plan_arguments(submit)
    main_server = submit.add_argument_group("the main server's submit_job parameters (Ref:: in the job definition)")
    main_server.add_argument("--input-bucket", help="read this bucket instead of $S3_BUCKET")
    main_server.add_argument("--input-prefix", help="read this prefix instead of $S3_PREFIX")
    main_server.add_argument(
        "--output-table",
        help="the table the main server asks for: only user_behavior_vectors (the one this job writes)",
    )
    _sync_arguments(submit, default_children=8)
    plan = sub.add_parser("plan", help="plan a run without submitting it (prints one JSON line)")
    _plan_arguments(plan)
    sync = sub.add_parser("sync", help="plan a catalogue sync run without submitting it (prints one JSON line)")
    sync.add_argument("--batch-id", help="run id (default: $BATCH_ID, else generated)")
    sync.add_argument("--lease-hours", type=float, default=8.0, help="how long the run holds its places (default 8)")
    sync.add_argument("--dry-run", action="store_true", help="print what it would embed, writing nothing")
    _sync_arguments(sync, default_children=8)
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


def _sync_arguments(parser: argparse.ArgumentParser, *, default_children: int) -> None:
    parser.add_argument(
        "--sync-per-child",
        type=int,
        default=2_000,
        help="catalogue places one child embeds (default 2000; 0: no sync)",
    )
    parser.add_argument(
        "--max-sync-children",
        type=int,
        default=default_children,
        help=f"children of a sync run (default {default_children}): the places it embeds at most are both multiplied",
    )
    parser.add_argument(
        "--max-removed-share",
        type=float,
        default=REMOVED_MOST,
        help="the share of catalogued places a sync takes as removed from the catalogue at once"
        f" (default {REMOVED_MOST}; more is logged and left alone, as an empty or half-loaded catalogue looks)",
    )


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


def plan_options(args: argparse.Namespace, run_id: str) -> PlanOptions:
    from coordinator.sizing import parse_hour
    from witple_batch.model_source import ModelSource

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
    if not 0 <= args.lookback_hours <= 24 * 31:
        raise ConfigError("--lookback-hours must be between 0 and 744")
    return PlanOptions(
        run_id=run_id,
        shards=args.shards,
        target_mb=args.target_mb_per_shard,
        since=since,
        until=until,
        max_files=args.max_files,
        max_records=_max_records(args.max_records),
        dry_run=args.dry_run,
        lease_hours=args.lease_hours,
        model=ModelSource.from_env(),  # the space the run is planned for
        full=args.full,
        lookback_hours=args.lookback_hours,
    )


def sync_options(args: argparse.Namespace, run_id: str) -> SyncOptions:
    from witple_batch.catalogue import CatalogueSource
    from witple_batch.catalogue_column import CatalogueColumn
    from witple_batch.model_source import ModelSource

    if not 0 <= args.sync_per_child <= 100_000:
        raise ConfigError("--sync-per-child must be between 0 and 100000")
    if not 1 <= args.max_sync_children <= 10_000:
        raise ConfigError("--max-sync-children must be between 1 and 10000")
    if not 0 < args.lease_hours <= 72:
        raise ConfigError("--lease-hours must be above 0 and at most 72")
    if not 0 <= args.max_removed_share <= 1:
        raise ConfigError("--max-removed-share must be between 0 and 1")
    return SyncOptions(
        run_id=run_id,
        catalogue=CatalogueSource.parse(env_str("CATALOGUE_SOURCE", "auto") or "auto"),
        model=ModelSource.from_env(),
        per_child=args.sync_per_child,
        max_children=args.max_sync_children,
        lease_hours=args.lease_hours,
        dry_run=args.dry_run,
        column=CatalogueColumn.from_env(),
        max_removed_share=args.max_removed_share,
    )


def prepared(config: CommonConfig, client: Any, application: str, *, settle: bool) -> psycopg.Connection:
    """The coordinator's connection, the schema migrated and (unless a dry run) past runs concluded."""
    from coordinator.settle import settle_past_runs
    from witple_batch.database import connect_for
    from witple_batch.schema import migrate

    conn = connect_for(config, application)
    migrate(conn)
    if settle:
        settle_past_runs(conn, client, config)
    return conn


def _plan(args: argparse.Namespace) -> int:
    from coordinator.plan import plan_run

    config = common_from_env()
    if not args.dry_run:
        config.partials_key  # noqa: B018 - required to sign the plan: checked before anything is claimed
    options = plan_options(args, validate_run_id(args.batch_id or env_str("BATCH_ID") or new_run_id()))
    start = process_age_seconds()
    started = time.perf_counter()
    client = s3_client(config.region)
    with prepared(config, client, "coordinator.plan", settle=not args.dry_run) as conn:
        result = plan_run(conn, client, config, options).as_json()
    result["seconds"] = {"start": round(start, 3), "plan": round(time.perf_counter() - started, 3)}
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    return 0


def _sync(args: argparse.Namespace) -> int:
    from coordinator.sync import plan_sync

    config = common_from_env()
    if not args.dry_run:
        config.partials_key  # noqa: B018 - required to sign the plan: checked before anything is claimed
    options = sync_options(args, validate_run_id(args.batch_id or env_str("BATCH_ID") or new_run_id()))
    client = s3_client(config.region)
    with prepared(config, client, "coordinator.sync", settle=not args.dry_run) as conn:
        result = plan_sync(conn, client, config, options).as_json()
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    return 0


def _submit(args: argparse.Namespace) -> int:
    from coordinator.config import batch_settings_from_env
    from coordinator.submit import batch_client, coordinator_run_id, parse_output_table, submit

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
    settings = batch_settings_from_env()
    preflight.reachable(s3_client(config.region, max_attempts=2), config, list_input=True)
    run_id = validate_run_id(args.batch_id or env_str("BATCH_ID") or coordinator_run_id(config.job_id) or new_run_id())
    options = plan_options(args, run_id)
    sync = sync_options(args, validate_run_id(f"{run_id}-sync")) if args.sync_per_child else None
    for warning in config.warnings():  # after every setting is known good: a bad one is the only line
        event(log, warning, logging.WARNING)
    client = s3_client(config.region)
    with prepared(config, client, "coordinator.submit", settle=not args.dry_run) as conn:
        result = submit(conn, client, batch_client(config.region), config, settings, options, sync)
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    return 0


def _quarantine(args: argparse.Namespace) -> int:
    from witple_batch import run_state, watermark
    from witple_batch.database import connect_for

    config = common_from_env()
    with connect_for(config, "coordinator.quarantine") as conn:
        if args.list:
            for row in run_state.quarantined(conn):
                sys.stdout.write(orjson.dumps(row).decode() + "\n")
            return 0
        with conn.transaction():
            if not run_state.release(conn, args.release):
                raise ConfigError(f"{args.release} is not quarantined")
            listed = watermark.rewind(conn, watermark.input_source(config.s3_bucket, config.s3_prefix), args.release)
        event(
            log,
            "released from quarantine; the next plan reads it again"
            if listed
            else "released from quarantine; outside the hour partitions, the next `plan --full` reads it",
            key=args.release,
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from witple_batch.database import PERMANENT_DATABASE_ERRORS

    command = {"submit": _submit, "plan": _plan, "sync": _sync, "quarantine": _quarantine}[args.command]
    return run_job(f"coordinator.{args.command}", lambda: command(args), permanent_errors=PERMANENT_DATABASE_ERRORS)
