"""`python -m shard_job [check]`: the array child, and the check of what it needs."""

from __future__ import annotations

import argparse
import logging
from dataclasses import replace
from typing import TYPE_CHECKING

from witple_batch import preflight
from witple_batch.entrypoint import Failure, run_job
from witple_batch.logs import event
from witple_batch.s3 import s3_client
from witple_batch.settings import env_str

if TYPE_CHECKING:
    from shard_job.config import ShardConfig
    from witple_batch.settings import CommonConfig

DESCRIPTION = """\
Array child (default): reads its file list runs/<BATCH_ID>/plan/<index>.json, processes
shard AWS_BATCH_JOB_ARRAY_INDEX (default 0) and writes its partial under
runs/<BATCH_ID>/shards/<index>/ on the work location.

check [--local]: settings, model files against their sha256, listing the input, writing the
work prefix, the database reachable and migrated; one line each, exit 0 or 2. --local:
settings and model files only (no network).

Environment: BATCH_ID and PARTIALS_SECRET (required), S3_BUCKET, S3_PREFIX, WORK_BUCKET,
WORK_PREFIX, AWS_REGION, MODEL_DIR or MODEL_URI, DATABASE_URL (read-only: catalogue, stored
vectors), CATALOGUE_SOURCE, EMBED_THREADS, DOWNLOAD_CONCURRENCY, READ_AHEAD_MB, MAX_OBJECT_MB,
MAX_DECOMPRESSED_MB, MAX_RECORDS_PER_FILE, MAX_RECORD_KB, MAX_ACTIONS_PER_SHARD,
MAX_PLACES_PER_SHARD, WEBHOOK_URL, WEBHOOK_SECRET, JOB_ATTEMPTS, JOB_TIMEOUT_SECONDS
(README: Configuration).
"""

log = logging.getLogger(__name__)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m shard_job", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command")
    check = sub.add_parser("check", help="settings, model files, S3 and database as a child needs them (exit 0 or 2)")
    check.add_argument("--local", action="store_true", help="settings and model files only, no network")
    return parser.parse_args(argv)


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
        preflight.reachable(s3_client(config.common.region, max_attempts=2), config.common)
        for warning in config.common.warnings():
            event(log, warning, logging.WARNING)
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

    if args.command == "check":
        return run_job("shard_job.check", lambda: _check(args.local))
    return run_job("shard_job", _child, on_failure=_child_failed, permanent_errors=PERMANENT_DATABASE_ERRORS)
