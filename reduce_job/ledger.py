"""The processed-files ledger and the batch_runs record: what makes a run exactly-once."""

from __future__ import annotations

from typing import Any

import orjson
import psycopg

from witple_batch.settings import PermanentError


class OverlapError(PermanentError):
    """Files of this batch were already applied by another batch; nothing of this batch is applied."""


def committed_run(conn: psycopg.Connection, batch_id: str) -> dict[str, Any] | None:
    row = conn.execute(
        "SELECT stats, webhook_status FROM batch_runs WHERE batch_id = %s AND status = 'committed'", (batch_id,)
    ).fetchone()
    return None if row is None else {"stats": row[0], "webhook_status": row[1]}


def claim_files(conn: psycopg.Connection, batch_id: str) -> int:
    """Write ledger rows for every staged file, refusing the batch if one was applied before."""
    taken = conn.execute(
        "SELECT p.key, p.batch_id FROM processed_files p JOIN stage_files s USING (key) "
        "WHERE p.batch_id <> %s ORDER BY p.key LIMIT 11",
        (batch_id,),
    ).fetchall()
    if taken:
        keys = ", ".join(key for key, _ in taken[:10]) + (" ..." if len(taken) > 10 else "")
        batches = sorted({other for _, other in taken})
        raise OverlapError(f"files already processed by batch {', '.join(batches)}: {keys}; nothing applied")
    return conn.execute(
        "INSERT INTO processed_files (key, etag, size, batch_id, status, reason, records, accepted, rejected) "
        "SELECT key, etag, size, %s, status, reason, records, accepted, rejected FROM stage_files",
        (batch_id,),
    ).rowcount


def record_commit(conn: psycopg.Connection, batch_id: str, started_at: float, seconds: dict, stats: dict) -> None:
    conn.execute(
        "INSERT INTO batch_runs (batch_id, status, started_at, committed_at, seconds, stats, error) "
        "VALUES (%s, 'committed', to_timestamp(%s), now(), %s, %s, NULL) "
        "ON CONFLICT (batch_id) DO UPDATE SET status = 'committed', committed_at = now(), "
        "seconds = EXCLUDED.seconds, stats = EXCLUDED.stats, error = NULL, updated_at = now()",
        (batch_id, started_at, orjson.dumps(seconds).decode(), orjson.dumps(stats).decode()),
    )


def record_failure(conn: psycopg.Connection, batch_id: str, started_at: float, error: str) -> None:
    """Never overwrites a committed run (a late failure after commit is the webhook's, not the data's)."""
    conn.execute(
        "INSERT INTO batch_runs (batch_id, status, started_at, finished_at, error) "
        "VALUES (%s, 'failed', to_timestamp(%s), now(), %s) "
        "ON CONFLICT (batch_id) DO UPDATE SET error = EXCLUDED.error, finished_at = now(), updated_at = now() "
        "WHERE batch_runs.status <> 'committed'",
        (batch_id, started_at, error),
    )


def record_webhook(conn: psycopg.Connection, batch_id: str, status: str, attempts: int, error: str | None) -> None:
    conn.execute(
        "UPDATE batch_runs SET webhook_status = %s, webhook_attempts = coalesce(webhook_attempts, 0) + %s, "
        "webhook_error = %s, finished_at = now(), updated_at = now() WHERE batch_id = %s",
        (status, attempts, error, batch_id),
    )
