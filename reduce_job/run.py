"""The reduce: check every partial, stage them shard by shard, apply the run in one transaction,
then conclude it (report, then notify). One connection for the whole job."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import psycopg

from reduce_job import collect, consolidate, held_users, indexes, neighbours, serving_tables, staging, upsert, vectors
from reduce_job.config import ReduceConfig
from reduce_job.reduce_lock import take_reduce_lock
from witple_batch import catalogue_column, metrics, notices, run_state, watermark
from witple_batch.database import connect_for
from witple_batch.logs import event
from witple_batch.resources import peak_rss_mb, process_age_seconds
from witple_batch.run_layout import RunLayout, RunManifest, load_manifest
from witple_batch.schema import migrate
from witple_batch.vector_space import SPACE_KEY, VectorSpace
from witple_batch.webhook import Delivery

log = logging.getLogger(__name__)

SUMMED_METRICS = ("records_read", "records_accepted", "records_rejected", "places_reused", "texts_embedded")


@dataclass
class Outcome:
    stats: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)
    already_committed: bool = False
    notice: Delivery | None = None


class _AlreadyCommitted(Exception):
    """A concurrent retry of the same run committed first."""


def stage_run(
    conn: psycopg.Connection, client: Any, config: ReduceConfig, layout: RunLayout, manifest: RunManifest
) -> tuple[VectorSpace, dict[str, Any]]:
    """Every partial verified and staged; returns the run's vector space and its stats from the shards' metrics."""
    key = config.common.partials_key
    markers = collect.success_markers(client, layout, len(manifest.shards), key)
    run_state.mark_sharded(conn, config.run_id)
    staging.create(conn)
    totals = dict.fromkeys(SUMMED_METRICS, 0)
    shard_rss = 0.0
    shard_seconds: dict[str, float] = {}
    for shard in collect.partials(client, layout, manifest, markers, key, ahead=config.partials_ahead):
        staging.stage_partial(conn, shard.index, shard.arrays, shard.where)
        staging.stage_files(conn, shard.files)
        for name in SUMMED_METRICS:
            totals[name] += int(shard.metrics.get(name, 0))
        shard_rss = max(shard_rss, float(shard.metrics.get("peak_rss_mb", 0.0)))
        for stage, seconds in shard.metrics.get("seconds", {}).items():
            shard_seconds[stage] = max(shard_seconds.get(stage, 0.0), float(seconds))
    staging.analyze(conn)
    first = markers[0] if markers else {}
    space = VectorSpace(first.get("content_model", ""), first.get("place_text_version", ""), config.weights)
    envelopes = run_state.envelope_ids(conn, None)
    stats = {
        # the collection server's batch_ids: the main server marks its own copies of these actions processed
        "envelope_batch_ids": envelopes[: notices.ENVELOPE_IDS_IN_NOTICE],
        "envelope_batch_ids_total": len(envelopes),
        **run_state.staged_files(conn),
        "bytes": manifest.total_bytes,
        **totals,
        "shards": len(manifest.shards),
        # the space applied: a planner that read another for this run stops trusting what it reads
        SPACE_KEY: space.record(),
        "shard_peak_rss_mb": shard_rss,
        "shard_max_seconds": {k: round(v, 3) for k, v in shard_seconds.items()},
    }
    return space, stats


def apply(
    conn: psycopg.Connection,
    config: ReduceConfig,
    space: VectorSpace,
    stats: dict[str, Any],
    started: float,
    seconds: dict[str, float],
    manifest: RunManifest,
) -> None:
    """Everything in one transaction under the reduce lock: statistics, vectors, ledger, committed state."""
    with conn.transaction():
        take_reduce_lock(conn, config.common)
        run = run_state.get(conn, config.run_id)
        if run is not None and run.status in run_state.APPLIED:
            raise _AlreadyCommitted
        run_state.check_can_commit(conn, config.run_id)
        stats.update(apply_staged(conn, space, seconds))
        stats["reduce_peak_rss_mb"] = round(peak_rss_mb(), 1)
        stats["ledger_rows"] = run_state.commit(conn, config.run_id, started, seconds, stats)
        watermark.rewind_to_deferred(conn, watermark.input_source(manifest.input_bucket, manifest.input_prefix))


def apply_staged(
    conn: psycopg.Connection, space: VectorSpace, seconds: dict[str, float], *, everything: bool = False
) -> dict[str, Any]:
    """The staged rows into the tables (the caller holds the transaction and the reduce lock)."""
    # the vector aggregates keep 384 doubles per group: room for them in memory instead of on disk
    conn.execute("SET LOCAL work_mem = '256MB'")
    stats: dict[str, Any] = {}
    t = time.perf_counter()
    stats.update(upsert.batch_tables(conn))
    stats["new_pairs"] = upsert.interactions(conn, space)
    conn.execute(neighbours.QUEUE)  # counted after the notice (maintain_neighbours)
    stats.update(held_users.hold_and_release(conn))
    seconds["interactions"] = time.perf_counter() - t
    t = time.perf_counter()
    stats["vectors"] = vectors.compute(conn, space, everything=everything)
    seconds["vectors"] = time.perf_counter() - t
    t = time.perf_counter()
    space_changed = stats["vectors"]["mode"] == "everything"
    stats["written"] = upsert.write(conn, space, everything=space_changed)
    if space_changed:
        vectors.record_space(conn, space)
    seconds["write"] = time.perf_counter() - t
    t = time.perf_counter()
    stats["serving"] = serving_tables.refresh(conn, space, everything=space_changed)
    seconds["serving"] = time.perf_counter() - t
    return stats


def run_reduce(client: Any, config: ReduceConfig) -> Outcome:
    """The whole job on one connection: the run applied once, then concluded."""
    started = time.time()
    clock = time.monotonic()
    seconds = {"start": process_age_seconds()}  # interpreter, imports, settings, S3 client
    layout = RunLayout(config.common.work_bucket, config.common.work_prefix, config.run_id)
    with connect_for(config.common, "reduce_job") as conn:
        migrate(conn)
        if config.catalogue_column is not None:
            config.catalogue_column.check(conn)
        seconds["connect_and_migrate"] = time.monotonic() - clock
        run = run_state.get(conn, config.run_id)
        if run is not None and run.status is run_state.RunStatus.FAILED:
            restore_place_index(conn)  # an attempt that died between its drop and rebuild
            raise run_state.RunFailed(f"run {config.run_id} was recorded failed ({run.error}); nothing applied")
        if run is not None and run.status in run_state.APPLIED:
            outcome = _already(conn, config.run_id)
        else:
            manifest = load_manifest(client, layout, config.common.partials_key)
            t = time.perf_counter()
            space, stats = stage_run(conn, client, config, layout, manifest)
            if indexes.bulk_content_change(conn, space):
                stats["place_index"] = indexes.ensure_index(conn, indexes.PLACE_INDEX, wanted=False)
            seconds["stage"] = time.perf_counter() - t
            try:
                apply(conn, config, space, stats, started, seconds, manifest)
                outcome = Outcome(stats=stats, seconds=seconds)
                logged = {k: v for k, v in stats.items() if k != "envelope_batch_ids"}
                event(log, "batch committed", batch_id=config.run_id, **logged, seconds=_rounded(seconds))
                emit_committed(stats, seconds)
            except _AlreadyCommitted:  # a concurrent retry of the same run won the lock
                outcome = _already(conn, config.run_id)
            except BaseException:
                if stats.get("place_index") == "dropped":
                    restore_place_index(conn)  # readers keep their index whatever stopped the apply
                raise
        if config.catalogue_column is not None:
            publish_column(conn, config.catalogue_column)
        try:
            outcome.notice = notices.conclude(
                conn, client, config.common, config.run_id, by="reduce", already_committed=outcome.already_committed
            )
        except BaseException:
            restore_place_index(conn)  # a report PUT refused after the commit: readers get their index back now
            raise
        indexes.ensure_index(conn, indexes.PLACE_INDEX, wanted=True)
        indexes.ensure_index(conn, indexes.USER_INDEX, wanted=config.user_vector_index)
        maintain_neighbours(conn, config.neighbours)
        consolidate.consolidate_if_due(config.common, conn, config.consolidation)
    return outcome


def _already(conn: psycopg.Connection, run_id: str) -> Outcome:
    event(log, "run already committed; skipping the database step", batch_id=run_id)
    run = run_state.get(conn, run_id)
    return Outcome(stats=run.stats if run else {}, already_committed=True)


def publish_column(conn: psycopg.Connection, column: catalogue_column.CatalogueColumn) -> None:
    """The committed vectors into CATALOGUE_VECTOR_COLUMN before the notice, so the main server finds
    them there when told. The run is committed whatever happens here: a failure is logged and the
    coordinator's next sync writes what is left, never a FAILED notice for a committed run."""
    try:
        catalogue_column.publish(conn, column)
    except psycopg.Error as exc:
        event(log, "catalogue column not written; the next sync writes it", logging.ERROR, error=str(exc))


def maintain_neighbours(conn: psycopg.Connection, settings: neighbours.NeighbourSettings) -> None:
    """After the notice: the pairs queued so far counted, the due lists remade. The run is concluded
    whatever happens here; what is not done waits in the queue for the next run."""
    started = time.perf_counter()
    try:
        done = neighbours.maintain(conn, settings)
    except psycopg.Error as exc:
        event(log, "place neighbours not maintained; the next run does it", logging.ERROR, error=str(exc))
        return
    if done.get("skipped"):
        event(log, "place neighbours left to the next run: another maintenance holds them")
        return
    event(log, "place neighbours maintained", **done, seconds=round(time.perf_counter() - started, 3))


def restore_place_index(conn: psycopg.Connection) -> None:
    """Build the place index again after a failed apply; a failure here must not hide the first."""
    try:
        indexes.ensure_index(conn, indexes.PLACE_INDEX, wanted=True)
    except (psycopg.Error, OSError) as exc:
        event(log, "place index not rebuilt; the next reduce builds it", logging.WARNING, error=str(exc))


def emit_committed(stats: dict[str, Any], seconds: dict[str, float]) -> None:
    figures = metrics.run_figures(stats, sum(seconds.values()), stats.get("reduce_peak_rss_mb", 0.0))
    metrics.emit("reduce", {**figures, "Users": stats.get("users", 0), "Places": stats.get("places", 0)})


def _rounded(seconds: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 3) for k, v in seconds.items()}
