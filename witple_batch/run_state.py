"""Every move of a run's state, and the only code that writes batch_runs, file_claims and the ledger.

    planned (files claimed with a lease) -> sharded (every partial verified)
      -> committed (ledger rows, data and state in ONE transaction; claims released)
      -> notified (SUCCEEDED delivered, or its failure recorded)
    failed: final (last attempt or a permanent error, and not committed); claims released

A file is in at most one live claim and ends in the ledger once: processed, rejected or
quarantined. A run whose lease expires before it commits is abandoned: the next planner
records it failed and may claim its files again (the ledger still refuses a late commit).
The moves a shard child makes (fail, record a notice) are SQL functions, so a read-only role
with EXECUTE on them can make them and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
import psycopg

from witple_batch.run_layout import InputFile
from witple_batch.settings import PermanentError

PLAN_LOCK = 7_431_020_003  # planners take turns, so each sees the claims of the one before
NOTICE_LOCK_SPACE = 7_431  # pg_advisory_lock(space, hashtext(batch_id)): one notice sender per run
CLAIM_CHUNK = 10_000


class OverlapError(PermanentError):
    """Files of this batch belong to another batch; nothing of this batch is applied."""


class RunFailed(PermanentError):
    """The run was recorded failed before this attempt; a later plan takes its files again."""


@dataclass(frozen=True)
class Run:
    batch_id: str
    status: str
    notice: str | None
    error: str | None
    stats: dict[str, Any]
    webhook_status: str | None
    plan: dict[str, Any]  # what the planner recorded: its counts (shard_job.plan.PLAN_COUNTS) and the space it read


def get(conn: psycopg.Connection, batch_id: str) -> Run | None:
    row = conn.execute(
        "SELECT status, notice, error, stats, webhook_status, plan FROM batch_runs WHERE batch_id = %s", (batch_id,)
    ).fetchone()
    return None if row is None else Run(batch_id, row[0], row[1], row[2], row[3] or {}, row[4], row[5] or {})


# -- planning ------------------------------------------------------------------------------


ABANDONED = "abandoned: the lease expired before the run committed"


def expire_abandoned(conn: psycopg.Connection) -> list[str]:
    """Runs whose lease ran out before they committed: failed, their files free again.

    A run committing right now holds its row (check_can_commit): it is skipped, not failed
    under it, and its claims stay until its commit releases them.
    """
    expired = [
        row[0]
        for row in conn.execute(
            "UPDATE batch_runs SET status = 'failed', failed_at = now(), finished_at = now(), updated_at = now(),"
            " error = %s WHERE batch_id IN (SELECT batch_id FROM batch_runs WHERE status IN ('planned', 'sharded')"
            " AND lease_expires_at < now() FOR UPDATE SKIP LOCKED) RETURNING batch_id",
            (ABANDONED,),
        ).fetchall()
    ]
    conn.execute("DELETE FROM file_claims WHERE batch_id = ANY(%s)", (expired,))
    return expired


def owed_notices(conn: psycopg.Connection, quiet_seconds: float, limit: int) -> list[tuple[str, str]]:
    """Runs that ended (committed or failed) at least `quiet_seconds` ago and never recorded a
    notice: their job died before it could send one (killed at the timeout, database away).
    Returns (batch_id, error) pairs, oldest first."""
    rows = conn.execute(
        "SELECT batch_id, coalesce(error, '') FROM batch_runs"
        " WHERE notice IS NULL AND status IN ('committed', 'failed')"
        " AND coalesce(failed_at, committed_at) < now() - make_interval(secs => %s)"
        " ORDER BY coalesce(failed_at, committed_at) LIMIT %s",
        (quiet_seconds, limit),
    ).fetchall()
    return [(batch_id, error) for batch_id, error in rows]


def untaken(conn: psycopg.Connection, files: list[InputFile]) -> tuple[list[InputFile], list[str]]:
    """The files neither in the ledger nor claimed by a run, in order, and the keys left out only
    because a live run claims them (one query per call: pass a bounded chunk)."""
    keys = [f.key for f in files]
    rows = conn.execute(
        "SELECT key, true FROM processed_files WHERE key = ANY(%(k)s)"
        " UNION ALL SELECT key, false FROM file_claims WHERE key = ANY(%(k)s)",
        {"k": keys},
    ).fetchall()
    in_ledger = {key for key, ledger in rows if ledger}
    claimed = {key for key, ledger in rows if not ledger} - in_ledger
    return [f for f in files if f.key not in in_ledger and f.key not in claimed], sorted(claimed)


_CLAIM = """
WITH candidate AS (
    SELECT k.key FROM unnest(%(keys)s::text[]) WITH ORDINALITY AS k(key, n)
    WHERE NOT EXISTS (SELECT 1 FROM processed_files p WHERE p.key = k.key)
      AND NOT EXISTS (SELECT 1 FROM file_claims c WHERE c.key = k.key)
    ORDER BY k.n
    LIMIT %(limit)s
)
INSERT INTO file_claims (key, batch_id) SELECT key, %(batch_id)s FROM candidate
ON CONFLICT (key) DO NOTHING
RETURNING key
"""


def claim(conn: psycopg.Connection, batch_id: str, candidates: list[InputFile], limit: int | None) -> list[InputFile]:
    """Claim candidates in order that are neither in the ledger nor held by a run, up to `limit`.

    Call under PLAN_LOCK inside the planner's transaction, after expire_abandoned; the claims
    become visible with its commit.
    """
    claimed: set[str] = set()
    for start in range(0, len(candidates), CLAIM_CHUNK):
        room = None if limit is None else limit - len(claimed)
        if room is not None and room <= 0:
            break
        keys = [f.key for f in candidates[start : start + CLAIM_CHUNK]]
        rows = conn.execute(_CLAIM, {"keys": keys, "limit": room, "batch_id": batch_id}).fetchall()
        claimed.update(row[0] for row in rows)
    return [f for f in candidates if f.key in claimed]


# in a run's plan the space its planner read, in its stats the one it applied (both space_record)
VECTOR_SPACE = "space"


def space_record(model: str, text_version: str) -> dict[str, str]:
    """A vector space as a run's plan and stats hold it: one shape, so the planner's check compares like with like."""
    return {"model": model, "text_version": text_version}


def another_run_refreshing(conn: psycopg.Connection) -> bool:
    """Whether a run within its lease, planned or sharded, was handed places to re-embed (or was
    planned by a version that did not say): a plan now would name the same places again."""
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM batch_runs WHERE status IN ('planned', 'sharded') AND lease_expires_at > now()"
        " AND coalesce((plan ->> 'refresh_places')::int, 1) > 0)"
    ).fetchone()
    return bool(row and row[0])


def record_planned(conn: psycopg.Connection, batch_id: str, lease_seconds: float, plan: dict[str, Any]) -> None:
    conn.execute(
        "INSERT INTO batch_runs (batch_id, status, planned_at, lease_expires_at, plan)"
        " VALUES (%s, 'planned', now(), now() + make_interval(secs => %s), %s)",
        (batch_id, lease_seconds, orjson.dumps(plan).decode()),
    )


def mark_sharded(conn: psycopg.Connection, batch_id: str) -> None:
    """Every shard of the run left its signed _SUCCESS.json (informational: its files are checked against
    the marker's sha256 as they are staged, and the reduce may still fail)."""
    conn.execute(
        "UPDATE batch_runs SET status = 'sharded', updated_at = now() WHERE batch_id = %s AND status = 'planned'",
        (batch_id,),
    )


# -- committing ----------------------------------------------------------------------------


def check_can_commit(conn: psycopg.Connection, batch_id: str) -> None:
    """Inside the apply transaction, before any write: the run is not failed and no staged file is another run's.

    Locks the run's row until the commit, so a planner cannot record it abandoned meanwhile.
    """
    row = conn.execute("SELECT status, error FROM batch_runs WHERE batch_id = %s FOR UPDATE", (batch_id,)).fetchone()
    if row is not None and row[0] == "failed":
        raise RunFailed(f"batch {batch_id} was recorded failed before this attempt ({row[1]}); nothing applied")
    taken = conn.execute(
        "SELECT s.key, p.batch_id FROM stage_files s JOIN processed_files p USING (key) WHERE p.batch_id <> %(b)s"
        " UNION ALL SELECT s.key, c.batch_id FROM stage_files s JOIN file_claims c USING (key)"
        " WHERE c.batch_id <> %(b)s"
        " ORDER BY 1 LIMIT 11",
        {"b": batch_id},
    ).fetchall()
    if taken:
        keys = ", ".join(key for key, _ in taken[:10]) + (" ..." if len(taken) > 10 else "")
        batches = sorted({other for _, other in taken})
        raise OverlapError(f"files already processed or claimed by batch {', '.join(batches)}: {keys}; nothing applied")


def commit(
    conn: psycopg.Connection,
    batch_id: str,
    started_at: float,
    seconds: dict[str, float],
    stats: dict[str, Any],
    input_source: str,
) -> int:
    """Ledger rows for every staged file, the committed state, claims released: the apply transaction's last writes."""
    # deferred files (changed or deleted after planning, or past a full shard) stay out: the next
    # plan reads them again; a file this run's child already quarantined (quarantine()) keeps its row
    ledger_rows = conn.execute(
        "INSERT INTO processed_files (key, etag, size, batch_id, status, reason, records, accepted, rejected,"
        " rejects_by_reason, envelope_batch_id)"
        " SELECT key, etag, size, %s, status, reason, records, accepted, rejected, rejects_by_reason, envelope_batch_id"
        " FROM stage_files WHERE status <> 'deferred' ON CONFLICT (key) DO NOTHING",
        (batch_id,),
    ).rowcount
    moved = conn.execute(
        "INSERT INTO batch_runs (batch_id, status, started_at, committed_at, seconds, stats)"
        " VALUES (%s, 'committed', to_timestamp(%s), now(), %s, %s)"
        " ON CONFLICT (batch_id) DO UPDATE SET status = 'committed', started_at = EXCLUDED.started_at,"
        " committed_at = now(), seconds = EXCLUDED.seconds, stats = EXCLUDED.stats, error = NULL, updated_at = now()"
        " WHERE batch_runs.status IN ('planned', 'sharded')",
        (batch_id, started_at, orjson.dumps(seconds).decode(), orjson.dumps(stats).decode()),
    ).rowcount
    if moved != 1:  # check_can_commit holds the row, so only a caller that skipped it gets here
        raise RunFailed(f"batch {batch_id} is no longer planned; nothing applied")
    conn.execute("DELETE FROM file_claims WHERE batch_id = %s", (batch_id,))
    # its claims held the input's watermark at their hours; released, the deferred ones bring it back
    # there, so an incremental plan lists them even when a windowed plan (which moves no watermark) took them
    conn.execute(
        "UPDATE planner_watermarks w SET resume_hour = least(w.resume_hour, d.hour), updated_at = now()"
        " FROM (SELECT min(witple_partition_hour(key)) AS hour FROM stage_files WHERE status = 'deferred') d"
        " WHERE w.source = %s AND d.hour IS NOT NULL",
        (input_source,),
    )
    return int(ledger_rows)


# -- failing and notices -------------------------------------------------------------------


def fail(conn: psycopg.Connection, batch_id: str, error: str) -> bool:
    """planned/sharded -> failed; False when the run is already committed, notified or failed."""
    return bool(conn.execute("SELECT witple_fail_run(%s, %s)", (batch_id, error)).fetchone()[0])  # type: ignore[index]


def record_notice(
    conn: psycopg.Connection, batch_id: str, notice: str, webhook_status: str, attempts: int, error: str | None
) -> bool:
    """The notice this run sent (SUCCEEDED moves committed -> notified); False when the state does not allow it."""
    row = conn.execute(
        "SELECT witple_record_notice(%s, %s, %s, %s, %s)", (batch_id, notice, webhook_status, attempts, error)
    ).fetchone()
    return bool(row[0])  # type: ignore[index]


def lock_notice(conn: psycopg.Connection, batch_id: str) -> None:
    """Session lock: one process at a time decides and sends a run's notice; it dies with its holder."""
    conn.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", (NOTICE_LOCK_SPACE, batch_id))


def unlock_notice(conn: psycopg.Connection, batch_id: str) -> None:
    conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", (NOTICE_LOCK_SPACE, batch_id))


# -- quarantine ----------------------------------------------------------------------------


def quarantined(conn: psycopg.Connection) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT key, reason, batch_id, size, processed_at FROM processed_files WHERE status = 'quarantined'"
        " ORDER BY processed_at, key"
    ).fetchall()
    return [
        {"key": k, "reason": r, "batch_id": b, "size": s, "quarantined_at": t.isoformat()} for k, r, b, s, t in rows
    ]


def quarantine(conn: psycopg.Connection, item: InputFile, batch_id: str, reason: str) -> bool:
    """Set a file aside in the ledger now, whatever becomes of its run (a child found it stopped an attempt)."""
    row = conn.execute(
        "SELECT witple_quarantine_file(%s, %s, %s, %s, %s)", (item.key, item.etag, item.size, batch_id, reason)
    ).fetchone()
    return bool(row[0])  # type: ignore[index]


def release(conn: psycopg.Connection, key: str) -> bool:
    """Take a quarantined file out of the ledger, so the next plan reads it again."""
    return conn.execute("DELETE FROM processed_files WHERE key = %s AND status = 'quarantined'", (key,)).rowcount == 1
