"""One run's plan: list the input, claim what no run holds, write the plan create-only, record it.

The planner lists the hour partitions since its watermark (minus a lookback; everything on the
first plan or with --full, listing.py), keeping only files neither in the ledger nor claimed, a
chunk at a time. Then one transaction under the planner lock: the oldest of those are claimed
for this run, the shard file lists and the manifest are written with If-None-Match, the
watermark moves (never past a file that may still need planning) and the run is recorded
`planned`. Two planners at once, or a planner during a run in flight, therefore never put a
file in two runs. Places are embedded by the catalogue sync's runs (sync.py), not by these.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import Any

import psycopg
from botocore.exceptions import ClientError

from coordinator.config import PlanOptions
from coordinator.listing import list_batch_files
from coordinator.sizing import actions_in_key, balance, file_limit, shard_action_share, shard_count
from coordinator.space import children_space
from witple_batch import run_state, watermark
from witple_batch.errors import ConfigError
from witple_batch.logs import event
from witple_batch.run_layout import InputFile, RunLayout, RunManifest, ShardPlan, shard_entry
from witple_batch.settings import CommonConfig
from witple_batch.vector_space import SPACE_KEY, VectorSpace

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PlannedRun:
    """What a plan made (or would make, in a dry run), as the coordinator prints it."""

    run_id: str
    files: int = 0
    bytes: int = 0
    actions_named: int = 0  # by the counts in the file names
    shards: int = 0  # the array's size: file shards, or a sync's children
    places: int = 0  # places a sync's children embed (a file run's children embed what they meet)
    more: bool = False  # new files left for another run
    manifest_uri: str | None = None
    listing: str | None = None
    space: dict[str, str] | None = None  # the space it was planned for (None: unknown)
    resumed: str | None = None  # the recorded status, when a retried coordinator found this run planned

    RECORDED = ("files", "bytes", "shards", "actions_named", "places", "more")

    def record(self, read: VectorSpace | None) -> dict[str, Any]:
        """What batch_runs.plan keeps: the counts a retried coordinator reads back, and the space the
        planner read off the children's model (a later sync checks it against the space the run applied)."""
        return {**{name: getattr(self, name) for name in self.RECORDED}, SPACE_KEY: read and read.record()}

    @classmethod
    def resumed_from(cls, run: run_state.Run) -> PlannedRun:
        counts = {name: int(run.plan.get(name, 0)) for name in cls.RECORDED if name != "more"}
        # whether it left new files for another run (a plan recorded without saying, says so)
        return cls(run.run_id, **counts, more=bool(run.plan.get("more", True)), resumed=run.status.value)

    def as_json(self) -> dict[str, Any]:
        shown = {
            "batch_id": self.run_id,
            **{name: getattr(self, name) for name in self.RECORDED},
            "manifest_uri": self.manifest_uri,
            "listing": self.listing,
            "space": self.space,
        }
        return shown if self.resumed is None else {**shown, "resumed": self.resumed}


@dataclass
class Listing:
    files: list[InputFile] = field(default_factory=list)  # new files, oldest first: at most a run's worth
    complete: bool = True  # read to its end (False: stopped once a run's worth was found)
    seen_claimed: list[str] = field(default_factory=list)  # keys left out because a live run held them


def plan_run(conn: psycopg.Connection, client: Any, config: CommonConfig, options: PlanOptions) -> PlannedRun:
    """Plan one run (the caller migrated and settled past runs). A dry run reads and writes nothing."""
    read = children_space(options.model, client)
    source = watermark.input_source(config.s3_bucket, config.s3_prefix)
    recorded = watermark.read(conn, source)
    if options.full or options.windowed:
        start = options.since  # a window names its hours, before the watermark too (a backfill)
    else:
        start = watermark.start_hour(recorded, timedelta(hours=options.lookback_hours))
    now = datetime.now(UTC).replace(tzinfo=None)
    listed = new_files(conn, client, config, options, start, now)
    listing = "full" if start is None else f"hours from {start:%Y-%m-%dT%H}"
    limit = file_limit(listed.files, options.max_files, options.max_records)
    if options.dry_run:
        files = listed.files[:limit]
        return _planned(options, files, listed, listing, read)
    with conn.transaction():
        run_state.lock_planners(conn)
        if (existing := run_state.get(conn, options.run_id)) is not None:
            raise ConfigError(f"BATCH_ID {options.run_id} is already {existing.status}; choose a new one")
        files = run_state.claim(conn, options.run_id, listed.files, limit)
        planned = _planned(options, files, listed, listing, read, client=client, config=config)
        if not options.windowed:  # a window says nothing of other hours
            watermark.advance(conn, source, now, listed.seen_claimed, recorded)
        if planned.shards:
            run_state.record_planned(conn, options.run_id, options.lease_hours * 3600, planned.record(read))
    return planned


def _planned(
    options: PlanOptions,
    files: list[InputFile],
    listed: Listing,
    listing: str,
    read: VectorSpace | None,
    *,
    client: Any = None,
    config: CommonConfig | None = None,
) -> PlannedRun:
    """The run for these files and its file shards; the plan written when `client` is given."""
    shards = shard_count(files, options.shards, options.target_mb, options.max_records)
    event(log, "run planned", files=len(files), shards=shards, listing=listing)
    manifest_uri = None
    if shards and client is not None and config is not None:
        share = shard_action_share(options.max_records, shards)
        manifest_uri = write_plan(client, config, options.run_id, balance(files, shards), [], share)
    return PlannedRun(
        run_id=options.run_id,
        files=len(files),
        bytes=sum(f.size for f in files),
        actions_named=sum(actions_in_key(f.key) for f in files),
        shards=shards,
        more=not listed.complete or len(listed.files) > len(files),
        manifest_uri=manifest_uri,
        listing=listing,
        space=read and read.record(),
    )


def new_files(
    conn: psycopg.Connection,
    client: Any,
    config: CommonConfig,
    options: PlanOptions,
    start: datetime | None,
    now: datetime,
) -> Listing:
    """Listed batch files no run has taken, oldest first, checked against the ledger a chunk at a
    time: memory follows the new files (at most a run's worth of them), not the input's history."""
    end = now + timedelta(hours=1)
    keys = list_batch_files(
        client,
        config.s3_bucket,
        config.s3_prefix,
        start=start,
        end=min(end, options.until) if options.until else end,  # a window's hours end at --until
        since=options.since,
        until=options.until,
    )
    listed = Listing()
    seen = 0
    while chunk := list(islice(keys, run_state.CLAIM_CHUNK)):
        seen += len(chunk)
        untaken, claimed = run_state.untaken(conn, chunk)
        listed.files += untaken
        listed.seen_claimed += claimed
        limit = file_limit(listed.files, options.max_files, options.max_records)
        if limit is not None and len(listed.files) >= limit:
            listed.complete = False  # enough: the rest stay after the watermark (it holds at the oldest claimed)
            break
    event(log, "input listed", listed=seen, new=len(listed.files), listing="full" if start is None else "hours")
    return listed


def put_create_only(client: Any, bucket: str, key: str, body: bytes) -> None:
    """Write `key` only if nothing is there: a planned run never changes under its children.

    An object already there belongs to a planner that died before committing this run (the
    database has no such run, so no child was started on it): it is replaced, still create-only.
    """
    for retry in (True, False):
        try:
            client.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/json", IfNoneMatch="*")
            return
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "PreconditionFailed":
                raise
            if not retry:
                raise ConfigError(f"s3://{bucket}/{key} already exists: this BATCH_ID was planned before") from None
            client.delete_object(Bucket=bucket, Key=key)


def write_plan(
    client: Any,
    config: CommonConfig,
    run_id: str,
    shards: list[list[InputFile]],
    refresh: list[tuple[str, str]],
    max_actions: int | None,
) -> str:
    """One signed file list per child (its share of `refresh` dealt evenly), then the manifest."""
    layout = RunLayout(config.work_bucket, config.work_prefix, run_id)
    now = datetime.now(UTC)
    planned_us = int(now.timestamp() * 1_000_000)
    entries = []
    for index, files in enumerate(shards):
        stale = tuple(refresh[index :: len(shards)])
        plan = ShardPlan(run_id, index, config.s3_bucket, planned_us, tuple(files), stale, max_actions)
        body = plan.to_json(config.partials_key)
        put_create_only(client, layout.work_bucket, layout.shard_plan_key(index), body)
        entries.append(shard_entry(plan, body))
    manifest = RunManifest(
        run_id, config.s3_bucket, config.s3_prefix, now.isoformat(timespec="seconds"), tuple(entries)
    )
    put_create_only(client, layout.work_bucket, layout.manifest_key, manifest.to_json(config.partials_key))
    return layout.uri(layout.manifest_key)
