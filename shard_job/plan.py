"""`python -m shard_job plan`: list the input, claim what no run holds, write the plan create-only.

With the ledger (the default), the planner lists the hour partitions since its watermark (minus
a lookback; everything on the first plan or with --full, shard_job/listing.py), keeping only
files neither in the ledger nor claimed, a chunk at a time. Then one transaction under a planner
lock: the oldest of those are claimed for this run, the watermark moves (never past a file that
may still need planning, shard_job/watermark.py), the run is recorded `planned`, and the shard
file lists and the manifest are written with If-None-Match before the transaction commits. Two
planners at once, or a planner during a run in flight, therefore never put a file in two runs.
The children are also handed places stored in another vector space than theirs (a new export's
first run), on children of their own when the file shards' shares cannot take them all.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import Any

import psycopg
from botocore.exceptions import BotoCoreError, ClientError

from shard_job import watermark
from shard_job.listing import list_batch_files
from shard_job.model_source import ModelSource
from shard_job.planning import (
    actions_in_key,
    balance,
    file_limit,
    refresh_shard_limit,
    refresh_shards,
    shard_action_share,
    shard_count,
)
from witple_batch import notices, run_report, run_state
from witple_batch.config import CommonConfig
from witple_batch.database import connect_for
from witple_batch.logs import event
from witple_batch.model_files import ModelError
from witple_batch.place_text import PLACE_TEXT_VERSION
from witple_batch.run_layout import InputFile, RunLayout, RunManifest, ShardPlan, input_source, shard_entry
from witple_batch.schema import migrate
from witple_batch.settings import ConfigError

log = logging.getLogger(__name__)


# the counts of a run's plan the ledger records, and a retried coordinator reads back
PLAN_COUNTS = ("files", "bytes", "shards", "actions_named", "refresh_places", "refresh_shards")


@dataclass(frozen=True)
class PlanOptions:
    batch_id: str
    shards: int | None
    target_mb: float
    since: datetime | None
    until: datetime | None
    max_files: int | None
    dry_run: bool = False
    use_ledger: bool = True
    lease_hours: float = 8.0
    refresh_per_shard: int = 2_000  # places of another space re-embedded per child (bounded work per run)
    max_refresh_shards: int = 8  # children added with no files when the file shards' shares leave places over
    model: ModelSource | None = None  # the children's model; None: re-embed toward the last applied space
    full: bool = False  # list every key under the prefix, not the hours since the watermark
    lookback_hours: float = 24.0  # hours before the watermark listed again, for files that arrive late
    max_records: int | None = None  # actions per run, by the counts in the files' names (maxRecords)
    resume: bool = False  # a BATCH_ID planned before returns its recorded plan (a retried coordinator)
    settle: bool = True  # record expired runs failed and send owed notices first


def put_create_only(client: Any, bucket: str, key: str, body: bytes, *, replace_orphan: bool) -> None:
    """Write `key` only if nothing is there: a planned run never changes under its children.

    With the ledger, an object already there belongs to a planner that died before committing
    this run (the database has no such run, so no child was started on it): it is replaced,
    still create-only. Without the ledger nothing can say so, and the plan is refused.
    """
    for retry in (replace_orphan, False):
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
    batch_id: str,
    shards: list[list[InputFile]],
    refresh: list[tuple[str, str]],
    max_actions: int | None,
    *,
    replace_orphan: bool,
) -> str:
    layout = RunLayout(config.work_bucket, config.work_prefix, batch_id)
    now = datetime.now(UTC)
    planned_us = int(now.timestamp() * 1_000_000)
    entries = []
    for index, files in enumerate(shards):
        stale = tuple(refresh[index :: len(shards)])  # spread evenly: each child embeds its share
        plan = ShardPlan(batch_id, index, config.s3_bucket, planned_us, tuple(files), stale, max_actions)
        body = plan.to_json(config.partials_key)
        put_create_only(client, layout.work_bucket, layout.shard_plan_key(index), body, replace_orphan=replace_orphan)
        entries.append(shard_entry(plan, body))
    manifest = RunManifest(
        batch_id, config.s3_bucket, config.s3_prefix, now.isoformat(timespec="seconds"), tuple(entries)
    )
    body = manifest.to_json(config.partials_key)
    put_create_only(client, layout.work_bucket, layout.manifest_key, body, replace_orphan=replace_orphan)
    return layout.uri(layout.manifest_key)


def _result(options: PlanOptions, files: list[InputFile], shards: int) -> dict[str, Any]:
    return {
        "batch_id": options.batch_id,
        "shards": shards,
        "files": len(files),
        "bytes": sum(f.size for f in files),
        "actions_named": sum(actions_in_key(f.key) for f in files),  # by the counts in the file names
        "manifest_uri": None,
    }


def plan(client: Any, config: CommonConfig, options: PlanOptions) -> dict[str, Any]:
    now = datetime.now(UTC).replace(tzinfo=None)
    if not options.use_ledger:
        listed = list_batch_files(
            client, config.s3_bucket, config.s3_prefix, start=None, end=now, since=options.since, until=options.until
        )
        files = list(islice(listed, options.max_files))
        files = files[: file_limit(files, options.max_files, options.max_records)]
        shards = shard_count(files, options.shards, options.target_mb, options.max_records)
        return _finish(client, config, options, files, shards, [], listing="full")
    if config.database_url is None:
        raise ConfigError("DATABASE_URL is required to plan (files are claimed in the ledger); or pass --no-ledger")
    with connect_for(config, "shard_job.plan") as conn:
        migrate(conn)
        if options.resume and (existing := run_state.get(conn, options.batch_id)) is not None:
            return _resumed(existing)  # before any listing: a retried coordinator only needs the record
        if options.settle and not options.dry_run:
            settle_past_runs(conn, client, config)
        read = children_space(options.model, client) if options.refresh_per_shard else None
        source = input_source(config.s3_bucket, config.s3_prefix)
        recorded = watermark.read(conn, source)
        if options.full or options.since is not None or options.until is not None:
            start = options.since  # a window names its hours, before the watermark too (a backfill)
        else:
            start = watermark.start_hour(recorded, timedelta(hours=options.lookback_hours))
        candidates, listed_all, seen_claimed = new_files(conn, client, config, options, start, now)
        with conn.transaction():
            _plan_lock(conn)
            if (existing := run_state.get(conn, options.batch_id)) is not None:
                if options.resume:
                    return _resumed(existing)
                raise ConfigError(f"BATCH_ID {options.batch_id} is already {existing.status}; choose a new one")
            limit = file_limit(candidates, options.max_files, options.max_records)
            if options.dry_run:
                files = candidates[:limit]  # what it would claim now
            else:
                files = run_state.claim(conn, options.batch_id, candidates, limit)
            file_shards = shard_count(files, options.shards, options.target_mb, options.max_records)
            refresh, toward = [], refresh_space(conn, read)  # under the lock: no run commits meanwhile
            if file_shards and not run_state.another_run_refreshing(conn):  # its children may be re-embedding them
                most = file_shards + refresh_shard_limit(file_shards, options.max_refresh_shards)
                refresh = stale_places(conn, most * options.refresh_per_shard, toward)
            listing = "full" if start is None else f"hours from {start:%Y-%m-%dT%H}"
            result = _finish(client, config, options, files, file_shards, refresh, listing=listing, toward=toward)
            result["more"] = not listed_all or len(candidates) > len(files)  # new files left for another run
            if options.dry_run:
                raise psycopg.Rollback  # nothing claimed, nothing moved
            if options.since is None and options.until is None:  # a window says nothing of other hours
                watermark.advance(conn, source, now, seen_claimed, recorded)
            if result["shards"]:
                # with the space it read: the next planner checks it against the space the run applied
                plan_stats = {
                    **{k: result[k] for k in PLAN_COUNTS},
                    "more": result["more"],
                    run_state.VECTOR_SPACE: read,
                }
                run_state.record_planned(conn, options.batch_id, options.lease_hours * 3600, plan_stats)
    return result


def _resumed(run: run_state.Run) -> dict[str, Any]:
    """What a run planned before holds, as a plan's result (its files stay claimed by it)."""
    recorded = {k: int(run.plan.get(k, 0)) for k in PLAN_COUNTS}
    # whether it left new files for another run (a plan recorded before this was kept says so)
    more = bool(run.plan.get("more", True))
    return {"batch_id": run.batch_id, **recorded, "manifest_uri": None, "resumed": run.status, "more": more}


def new_files(
    conn: psycopg.Connection,
    client: Any,
    config: CommonConfig,
    options: PlanOptions,
    start: datetime | None,
    now: datetime,
) -> tuple[list[InputFile], bool, list[str]]:
    """Listed batch files no run has taken, oldest first, checked against the ledger a chunk at a
    time: memory follows the new files (at most a run's worth of them), not the input's history.
    Also whether the listing was read to its end (False: stopped once a run's worth was found),
    and the keys left out because a live run claimed them (bounded by the live claims)."""
    end = now + timedelta(hours=1)
    listed = list_batch_files(
        client,
        config.s3_bucket,
        config.s3_prefix,
        start=start,
        end=min(end, options.until) if options.until else end,  # a window's hours end at --until
        since=options.since,
        until=options.until,
    )
    found: list[InputFile] = []
    seen_claimed: list[str] = []
    seen = 0
    listed_all = True
    while chunk := list(islice(listed, run_state.CLAIM_CHUNK)):
        seen += len(chunk)
        untaken, claimed = run_state.untaken(conn, chunk)
        found += untaken
        seen_claimed += claimed
        limit = file_limit(found, options.max_files, options.max_records)
        if limit is not None and len(found) >= limit:
            listed_all = False  # enough: the rest stay after the watermark (it holds at the oldest claimed)
            break
    event(log, "input listed", listed=seen, new=len(found), listing="full" if start is None else "hours")
    return found, listed_all, seen_claimed


def _plan_lock(conn: psycopg.Connection) -> None:
    conn.execute("SET LOCAL lock_timeout = '120s'")  # another planner may hold the lock a while
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (run_state.PLAN_LOCK,))


OWED_NOTICE_QUIET_SECONDS = 600.0  # a job that just ended may still be sending its own notice
OWED_NOTICES_PER_PLAN = 20


def settle_past_runs(conn: psycopg.Connection, client: Any, config: CommonConfig) -> None:
    """Runs whose lease ran out: recorded failed in a transaction of their own, then told (FAILED).
    Then the notices still owed by runs whose job died before sending one (killed at its timeout,
    database away): a committed run's report first (its reduce may have died before writing it),
    then its notice, so every ended run is told (notices.notify records each notice once)."""
    with conn.transaction():
        _plan_lock(conn)
        abandoned = run_state.expire_abandoned(conn)
    for batch_id in abandoned:
        event(log, "abandoned run recorded failed (its lease expired)", batch_id=batch_id)
        notices.settle(config, batch_id, run_state.ABANDONED, 0.0, {"stage": "plan"})
    for batch_id, error in run_state.owed_notices(conn, OWED_NOTICE_QUIET_SECONDS, OWED_NOTICES_PER_PLAN):
        event(log, "sending a notice its run still owes", batch_id=batch_id)
        run = run_state.get(conn, batch_id)
        if run is not None and run.status == "committed":
            layout = RunLayout(config.work_bucket, config.work_prefix, batch_id)
            run_report.write(client, layout, conn, run.stats, {}, written_by="planner")
        notices.settle(config, batch_id, error, 0.0, {"stage": "plan"})


def children_space(source: ModelSource | None, client: Any) -> dict[str, str] | None:
    """The space the children will embed in: the model of the planner's own MODEL_DIR or MODEL_URI
    (the image's, which a coordinator shares with its shards) and this code's place text version.
    None, with a warning, when the model cannot be read: re-embedding then follows the last
    applied space, a run later, which is no reason to stop planning files."""
    if source is None:
        return None
    try:
        model = source.onnx_sha256(client)
    except (ModelError, ConfigError, OSError, ClientError, BotoCoreError) as exc:
        event(
            log,
            "children's model unknown: re-embedding follows the last applied space",
            logging.WARNING,
            error=str(exc),
        )
        return None
    return run_state.space_record(model, PLACE_TEXT_VERSION)


def refresh_space(conn: psycopg.Connection, read: dict[str, str] | None) -> dict[str, str] | None:
    """The space to bring places over to: the one this planner read, so a new export's first run
    already re-embeds. Not when the last committed run planned for a space was applied in another
    (the coordinator and the shards read different models or run different code): the children
    would find every place named already in theirs while the applied space's stale places never
    came over. None then, with a warning: the last applied space (vector_space), as without a read.
    """
    if read is None:
        return None
    row = conn.execute(
        f"SELECT plan -> '{run_state.VECTOR_SPACE}', stats -> '{run_state.VECTOR_SPACE}' FROM batch_runs"
        f" WHERE status IN ('committed', 'notified') AND plan -> '{run_state.VECTOR_SPACE}' ->> 'model' IS NOT NULL"
        " ORDER BY committed_at DESC NULLS LAST, batch_id DESC LIMIT 1"
    ).fetchone()
    if row is not None and row[0] == read and row[1] is not None and row[1] != read:
        event(
            log,
            "the last run planned for this space applied another: the coordinator and the shards read"
            " different models (MODEL_DIR, MODEL_URI) or run different code; re-embedding follows the applied space",
            logging.WARNING,
            planned=read,
            applied=row[1],
        )
        return None
    return read


def stale_places(conn: psycopg.Connection, limit: int, space: dict[str, str] | None) -> list[tuple[str, str]]:
    """Places whose stored content was not made in `space`, most recently active first; without
    `space`, in the last applied one (vector_space). Nothing before a first batch: an empty or
    adopted table has nothing of ours to bring over. Until re-embedded, such a place counts in no
    vector (reduce_job/vectors.py).
    """
    if limit == 0:
        return []
    rows = conn.execute(
        "SELECT p.place_category, p.place_id FROM place_vectors p, vector_space s"
        " WHERE p.content_model IS DISTINCT FROM coalesce(%(model)s, s.content_model)"
        " OR p.place_text_version IS DISTINCT FROM coalesce(%(text_version)s, s.place_text_version)"
        " ORDER BY p.last_action_date DESC NULLS LAST, p.place_category, p.place_id LIMIT %(limit)s",
        {**(space or {"model": None, "text_version": None}), "limit": limit},
    ).fetchall()
    return [(category, place_id) for category, place_id in rows]


def _finish(
    client: Any,
    config: CommonConfig,
    options: PlanOptions,
    files: list[InputFile],
    file_shards: int,
    refresh: list[tuple[str, str]],
    *,
    listing: str,
    toward: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The file shards, then the refresh-only ones for what their shares of `refresh` leave over
    (re-embedded toward `toward`; None: the last applied space)."""
    extra = refresh_shards(len(refresh), file_shards, options.refresh_per_shard, options.max_refresh_shards)
    event(
        log,
        "planned",
        files=len(files),
        shards=file_shards,
        refresh_shards=extra,
        refresh=len(refresh),
        listing=listing,
    )
    result = {
        **_result(options, files, file_shards + extra),
        "refresh_places": len(refresh),
        "refresh_shards": extra,
        "refresh_space": toward,
        "listing": listing,
    }
    if file_shards and not options.dry_run:
        shards = balance(files, file_shards) + [[] for _ in range(extra)]
        share = shard_action_share(options.max_records, file_shards)
        result["manifest_uri"] = write_plan(
            client, config, options.batch_id, shards, refresh, share, replace_orphan=options.use_ledger
        )
    return result
