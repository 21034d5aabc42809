"""The reduce: check partials, merge, one transaction, report, webhook."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
import psycopg

from reduce_job import collect, indexes, ledger
from reduce_job.config import ReduceConfig
from reduce_job.merge import BatchResult
from reduce_job.schema import REDUCE_LOCK, migrate
from reduce_job.staging import stage
from reduce_job.upsert import upsert
from witple_batch import webhook
from witple_batch.database import connect
from witple_batch.logs import event
from witple_batch.resources import peak_rss_mb
from witple_batch.run_layout import RunLayout, load_manifest

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    stats: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)
    already_committed: bool = False
    webhook_status: str | None = None


class _AlreadyCommitted(Exception):
    """A concurrent retry of the same batch committed first."""


def merge_partials(client: Any, layout: RunLayout) -> tuple[BatchResult, dict[str, Any]]:
    manifest = load_manifest(client, layout)
    batch = BatchResult()
    metrics: list[dict[str, Any]] = []
    for _index, partial, files in collect.partials(client, layout, manifest):
        batch.add(partial)
        metrics.append(orjson.loads(files["metrics.json"]))
    planned = {f.key for f in manifest.files}
    reported = {f["key"] for f in batch.files}
    if planned != reported:
        missing = sorted(planned - reported)[:10]
        raise collect.PartialError(f"partials do not cover the manifest: missing {missing}")
    stats = {
        "files": len(manifest.files),
        "files_rejected": sum(1 for f in batch.files if f["status"] == "rejected"),
        "bytes": manifest.total_bytes,
        "records_read": sum(m["records_read"] for m in metrics),
        "records_accepted": sum(m["records_accepted"] for m in metrics),
        "records_rejected": sum(m["records_rejected"] for m in metrics),
        "users": len(batch.user_keys),
        "places": len(batch.place_keys),
        "pairs": len(batch.pair_keys),
        "shards": len(manifest.shards),
        "places_reused": sum(m["places_reused"] for m in metrics),  # stored content vectors the shards took
        "texts_embedded": sum(m["texts_embedded"] for m in metrics),
        "shard_seconds": {str(m["shard"]): m["seconds"] for m in metrics},
        "shard_peak_rss_mb": max((m["peak_rss_mb"] for m in metrics), default=0.0),
        "merge_peak_rss_mb": round(peak_rss_mb(), 1),
    }
    return batch, stats


def apply(
    conn: psycopg.Connection,
    config: ReduceConfig,
    batch: BatchResult,
    stats: dict,
    started: float,
    seconds: dict[str, float],
) -> None:
    """Everything in one transaction: ledger, staging, merge, indexes, the batch_runs row."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (REDUCE_LOCK,))
        if ledger.committed_run(conn, config.batch_id) is not None:
            raise _AlreadyCommitted
        t = time.perf_counter()
        stats["staged"] = stage(conn, batch)
        seconds["copy"] = time.perf_counter() - t
        stats["ledger_rows"] = ledger.claim_files(conn, config.batch_id)
        wanted = [indexes.PLACE_INDEX] + ([indexes.USER_INDEX] if config.user_vector_index == "hnsw" else [])
        unwanted = [] if config.user_vector_index == "hnsw" else [indexes.USER_INDEX]
        rebuild = indexes.plan_indexes(conn, wanted, unwanted, config.index_rebuild_fraction)
        t = time.perf_counter()
        stats["upserted"] = upsert(conn, batch.content_model, batch.place_text_version)
        seconds["upsert"] = time.perf_counter() - t
        t = time.perf_counter()
        indexes.build_indexes(conn, rebuild)
        seconds["index_build"] = time.perf_counter() - t
        stats["indexes_rebuilt"] = [i.name for i in rebuild]
        ledger.record_commit(conn, config.batch_id, started, seconds, stats)


def run_reduce(client: Any, config: ReduceConfig) -> Outcome:
    started = time.time()
    seconds: dict[str, float] = {}
    layout = RunLayout(config.common.work_bucket, config.common.work_prefix, config.batch_id)
    with connect(config.database_url, attempts=config.db_connect_attempts, application="reduce_job") as conn:
        conn.autocommit = True
        migrate(conn)
        previous = ledger.committed_run(conn, config.batch_id)
        if previous is not None:
            event(log, "batch already committed; skipping the database step", batch_id=config.batch_id)
            return Outcome(stats=previous["stats"], already_committed=True, webhook_status=previous["webhook_status"])
        t = time.perf_counter()
        batch, stats = merge_partials(client, layout)
        seconds["merge"] = time.perf_counter() - t
        try:
            apply(conn, config, batch, stats, started, seconds)
        except _AlreadyCommitted:  # a concurrent retry of the same batch won the lock
            previous = ledger.committed_run(conn, config.batch_id) or {"stats": stats, "webhook_status": None}
            return Outcome(stats=previous["stats"], already_committed=True, webhook_status=previous["webhook_status"])
    event(
        log,
        "batch committed",
        batch_id=config.batch_id,
        **{k: v for k, v in stats.items() if k != "shard_seconds"},
        seconds={k: round(v, 3) for k, v in seconds.items()},
    )
    return Outcome(stats=stats, seconds=seconds)


def finish(client: Any, config: ReduceConfig, outcome: Outcome, elapsed: float) -> None:
    """After commit: the report, then the webhook once per committed batch. Never raises on delivery."""
    layout = RunLayout(config.common.work_bucket, config.common.work_prefix, config.batch_id)
    body = webhook.payload(
        job_id=config.common.job_id,
        job_name=config.common.job_name,
        status=webhook.SUCCEEDED,
        batch_id=config.batch_id,
        processed_records=int(outcome.stats.get("records_accepted", 0)),
        processing_time_seconds=elapsed,
        s3_input_path=config.common.s3_input_path,
        error_message=None,
        metadata={
            "files": outcome.stats.get("files", 0),
            "files_rejected": outcome.stats.get("files_rejected", 0),
            "records_read": outcome.stats.get("records_read", 0),
            "rejects": outcome.stats.get("records_rejected", 0),
            "users": outcome.stats.get("users", 0),
            "places": outcome.stats.get("places", 0),
            "shard_count": outcome.stats.get("shards", 0),
            "already_committed": outcome.already_committed,
            "report_uri": layout.uri(layout.report_key),
        },
    )
    report = {
        "batch_id": config.batch_id,
        "status": webhook.SUCCEEDED,
        "stats": outcome.stats,
        "seconds": {k: round(v, 3) for k, v in outcome.seconds.items()},
        "webhook": body,
    }
    client.put_object(
        Bucket=layout.work_bucket,
        Key=layout.report_key,
        Body=orjson.dumps(report, option=orjson.OPT_INDENT_2),
        ContentType="application/json",
    )
    if outcome.webhook_status == "delivered":
        event(log, "webhook already delivered for this batch; not sent again", batch_id=config.batch_id)
        return
    if config.common.webhook_url is None:
        status, attempts, error = "not_configured", 0, None
    else:
        delivery = webhook.send(
            config.common.webhook_url,
            body,
            secret=config.common.webhook_secret,
            attempts=config.webhook_attempts,
            timeout=config.webhook_timeout,
        )
        status = "delivered" if delivery.delivered else "failed"
        attempts, error = delivery.attempts, delivery.error
    with connect(config.database_url, attempts=config.db_connect_attempts, autocommit=True) as conn:
        ledger.record_webhook(conn, config.batch_id, status, attempts, error)
