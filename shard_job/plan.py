"""`python -m shard_job plan`: list the input, leave out processed files, write the run manifest."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg

from shard_job.planning import balance, select_files, shard_count
from witple_batch.config import CommonConfig
from witple_batch.database import connect
from witple_batch.logs import event
from witple_batch.run_layout import InputFile, RunLayout, RunManifest
from witple_batch.s3 import get_bytes
from witple_batch.settings import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PlanOptions:
    batch_id: str
    shards: int | None
    target_mb: float
    since: datetime | None
    until: datetime | None
    max_files: int | None
    dry_run: bool = False


def list_input(client: Any, bucket: str, key_prefix: str) -> Iterator[InputFile]:
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=key_prefix):
        for obj in page.get("Contents", []):
            yield InputFile(key=obj["Key"], size=int(obj["Size"]), etag=obj["ETag"].strip('"'))


def processed_keys(database_url: str | None, keys: list[str]) -> set[str]:
    """Keys already in the reduce job's ledger; a missing ledger table means none yet."""
    if not database_url or not keys:
        return set()
    with connect(database_url, autocommit=True, application="shard_job.plan") as conn:
        try:
            rows = conn.execute("SELECT key FROM processed_files WHERE key = ANY(%s)", (keys,)).fetchall()
        except psycopg.errors.UndefinedTable:
            return set()
    return {row[0] for row in rows}


def plan(client: Any, config: CommonConfig, options: PlanOptions) -> dict[str, Any]:
    listed = list(list_input(client, config.s3_bucket, config.s3_prefix))
    candidates = select_files(listed, processed=set(), since=options.since, until=options.until)
    done = processed_keys(config.database_url, [f.key for f in candidates])
    files = select_files(candidates, processed=done, max_files=options.max_files)
    n = shard_count(files, options.shards, options.target_mb)
    layout = RunLayout(config.work_bucket, config.work_prefix, options.batch_id)
    event(
        log,
        "input listed",
        listed=len(listed),
        candidates=len(candidates),
        already_processed=len(done),
        planned=len(files),
        shards=n,
    )
    result: dict[str, Any] = {
        "batch_id": options.batch_id,
        "shards": n,
        "files": len(files),
        "bytes": sum(f.size for f in files),
        "manifest_uri": None,
    }
    if n == 0 or options.dry_run:
        return result
    manifest = RunManifest(
        batch_id=options.batch_id,
        input_bucket=config.s3_bucket,
        input_prefix=config.s3_prefix,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        shards=tuple(tuple(shard) for shard in balance(files, n)),
    )
    if get_bytes(client, layout.work_bucket, layout.manifest_key) is not None:
        # children may already be reading it: never change a planned run under them
        raise ConfigError(f"BATCH_ID {options.batch_id} already has a manifest at {layout.uri(layout.manifest_key)}")
    client.put_object(
        Bucket=layout.work_bucket, Key=layout.manifest_key, Body=manifest.to_json(), ContentType="application/json"
    )
    result["manifest_uri"] = layout.uri(layout.manifest_key)
    return result
