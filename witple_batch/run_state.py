"""The run and file state machines: their states as types, and the only code that moves either.

    run:  planned -> sharded -> committed -> notified
          planned | sharded -> failed (final)
    file: claimed by one live run (file_claims, with the run's lease)
          -> processed | rejected | quarantined: its ledger row (processed_files), written once
          -> deferred: no ledger row, so a later plan lists it again
          quarantined -> released (its row deleted: the next plan reads the file again)

Every move is one statement that names the states it may start from, so a move the state does
not allow changes nothing and says so. The database enforces the same moves (migration 011: a
trigger on batch_runs, a write-once ledger); tests/test_state_machine.py walks every pair and
checks that RUN_MOVES and the database agree. A notice follows a state: SUCCEEDED only from
committed (which it moves to notified), FAILED only from failed, each once per run. The moves a
shard child makes (quarantine a file, fail its run, record its notice) are SQL functions, so
its read-only database role can make them and nothing else.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import orjson
import psycopg

from witple_batch.errors import PermanentError
from witple_batch.run_layout import InputFile
from witple_batch.schema import PLAN_LOCK


class RunStatus(StrEnum):
    PLANNED = "planned"
    SHARDED = "sharded"
    COMMITTED = "committed"
    NOTIFIED = "notified"
    FAILED = "failed"


RUN_MOVES: frozenset[tuple[RunStatus, RunStatus]] = frozenset(
    {
        (RunStatus.PLANNED, RunStatus.SHARDED),
        (RunStatus.PLANNED, RunStatus.COMMITTED),
        (RunStatus.SHARDED, RunStatus.COMMITTED),
        (RunStatus.COMMITTED, RunStatus.NOTIFIED),
        (RunStatus.PLANNED, RunStatus.FAILED),
        (RunStatus.SHARDED, RunStatus.FAILED),
    }
)
LIVE = (RunStatus.PLANNED, RunStatus.SHARDED)  # may still be given jobs, and holds its claims
APPLIED = (RunStatus.COMMITTED, RunStatus.NOTIFIED)  # its data is in the tables


class Notice(StrEnum):
    """The job_status of a run's completion notice."""

    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"


NOTICE_FOLLOWS = {Notice.SUCCEEDED: RunStatus.COMMITTED, Notice.FAILED: RunStatus.FAILED}


class WebhookOutcome(StrEnum):
    DELIVERED = "delivered"
    FAILED = "failed"
    NOT_CONFIGURED = "not_configured"


class FileStatus(StrEnum):
    PROCESSED = "processed"
    REJECTED = "rejected"  # malformed: its reason is kept, it is never read again
    QUARANTINED = "quarantined"  # over a limit, or it stopped a child: set aside until released
    DEFERRED = "deferred"  # changed after planning, or past a full shard: left to a later plan


LEDGER = (FileStatus.PROCESSED, FileStatus.REJECTED, FileStatus.QUARANTINED)  # a file ends here, once

NOTICE_LOCK_SPACE = 7_431  # pg_advisory_lock(space, hashtext(run id)): one notice sender per run
CLAIM_CHUNK = 10_000
ABANDONED = "abandoned: the lease expired before the run committed"


def may_move(source: RunStatus, target: RunStatus) -> bool:
    return (source, target) in RUN_MOVES


def statuses(values: Iterable[StrEnum]) -> list[str]:
    """Enum members as the text the database holds (for `= ANY(%s)`)."""
    return [value.value for value in values]


def _from(target: RunStatus) -> list[str]:
    """The states a move into `target` may start from."""
    return sorted(source.value for source, to in RUN_MOVES if to is target)


class OverlapError(PermanentError):
    """Files of this run belong to another run; nothing of this run is applied."""


class RunFailed(PermanentError):
    """The run was recorded failed before this attempt; a later plan takes its files again."""


@dataclass(frozen=True)
class Run:
    run_id: str
    status: RunStatus
    notice: Notice | None
    error: str | None
    stats: dict[str, Any]
    plan: dict[str, Any]  # what the planner recorded: its counts (coordinator.plan.PlannedRun) and the space it read
    seconds: dict[str, float] = field(default_factory=dict)  # the reduce's stages


def get(conn: psycopg.Connection, run_id: str) -> Run | None:
    row = conn.execute(
        "SELECT status, notice, error, stats, plan, seconds FROM batch_runs WHERE batch_id = %s",
        (run_id,),
    ).fetchone()
    if row is None:
        return None
    status, notice, error, stats, plan, seconds = row
    return Run(
        run_id,
        RunStatus(status),
        Notice(notice) if notice else None,
        error,
        stats or {},
        plan or {},
        seconds or {},
    )


# -- planning ------------------------------------------------------------------------------


def expire_abandoned(conn: psycopg.Connection) -> list[str]:
    """Runs whose lease ran out before they committed: failed, their files free again.

    A run committing right now holds its row (check_can_commit): it is skipped, not failed
    under it, and its claims stay until its commit releases them.
    """
    expired = [
        row[0]
        for row in conn.execute(
            "SELECT batch_id FROM batch_runs WHERE status = ANY(%s) AND lease_expires_at < now()"
            " ORDER BY batch_id FOR UPDATE SKIP LOCKED",
            (_from(RunStatus.FAILED),),
        ).fetchall()
    ]
    return [run_id for run_id in expired if fail(conn, run_id, ABANDONED)]


def owed_notices(conn: psycopg.Connection, quiet_seconds: float, limit: int) -> list[str]:
    """Runs that ended (committed or failed) at least `quiet_seconds` ago and never recorded a
    notice: their job died before it could send one (killed at the timeout, database away). Oldest first."""
    rows = conn.execute(
        "SELECT batch_id FROM batch_runs WHERE notice IS NULL AND status = ANY(%s)"
        " AND coalesce(failed_at, committed_at) < now() - make_interval(secs => %s)"
        " ORDER BY coalesce(failed_at, committed_at) LIMIT %s",
        (statuses(NOTICE_FOLLOWS.values()), quiet_seconds, limit),
    ).fetchall()
    return [row[0] for row in rows]


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
INSERT INTO file_claims (key, batch_id) SELECT key, %(run_id)s FROM candidate
ON CONFLICT (key) DO NOTHING
RETURNING key
"""


def claim(conn: psycopg.Connection, run_id: str, candidates: list[InputFile], limit: int | None) -> list[InputFile]:
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
        rows = conn.execute(_CLAIM, {"keys": keys, "limit": room, "run_id": run_id}).fetchall()
        claimed.update(row[0] for row in rows)
    return [f for f in candidates if f.key in claimed]


def lock_planners(conn: psycopg.Connection) -> None:
    """Inside a transaction: planners take turns (another may hold the lock a while)."""
    conn.execute("SET LOCAL lock_timeout = '120s'")
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (PLAN_LOCK,))


def a_sync_is_live(conn: psycopg.Connection) -> bool:
    """Whether a live run within its lease was handed places to embed (or was planned by a version
    that did not say; 'refresh_places' is that version's name): a sync now would name them again."""
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM batch_runs WHERE status = ANY(%s) AND lease_expires_at > now()"
        " AND coalesce(plan ->> 'places', plan ->> 'refresh_places', '1')::int > 0)",
        (statuses(LIVE),),
    ).fetchone()
    return bool(row and row[0])


def last_applied_plan(conn: psycopg.Connection, key: str) -> tuple[Any, Any] | None:
    """(plan[key], stats[key]) of the most recently committed run whose plan recorded `key`."""
    return conn.execute(
        "SELECT plan -> %(key)s, stats -> %(key)s FROM batch_runs"
        " WHERE status = ANY(%(applied)s) AND jsonb_typeof(plan -> %(key)s) = 'object'"
        " ORDER BY committed_at DESC NULLS LAST, batch_id DESC LIMIT 1",
        {"key": key, "applied": statuses(APPLIED)},
    ).fetchone()


def record_planned(conn: psycopg.Connection, run_id: str, lease_seconds: float, plan: dict[str, Any]) -> None:
    conn.execute(
        "INSERT INTO batch_runs (batch_id, status, planned_at, lease_expires_at, plan)"
        " VALUES (%s, %s, now(), now() + make_interval(secs => %s), %s)",
        (run_id, RunStatus.PLANNED.value, lease_seconds, orjson.dumps(plan).decode()),
    )


def mark_sharded(conn: psycopg.Connection, run_id: str) -> None:
    """Every shard of the run left its signed _SUCCESS.json (informational: its files are checked
    against the marker's sha256 as they are staged, and the reduce may still fail)."""
    conn.execute(
        "UPDATE batch_runs SET status = %s, updated_at = now() WHERE batch_id = %s AND status = ANY(%s)",
        (RunStatus.SHARDED.value, run_id, _from(RunStatus.SHARDED)),
    )


# -- committing ----------------------------------------------------------------------------


def check_can_commit(conn: psycopg.Connection, run_id: str) -> None:
    """Inside the apply transaction, before any write: the run may still commit and no staged file
    is another run's. Locks the run's row until the commit, so a planner cannot record it
    abandoned meanwhile."""
    row = conn.execute("SELECT status, error FROM batch_runs WHERE batch_id = %s FOR UPDATE", (run_id,)).fetchone()
    if row is None:
        raise RunFailed(f"run {run_id} was never planned; nothing applied")
    if not may_move(RunStatus(row[0]), RunStatus.COMMITTED):
        raise RunFailed(f"run {run_id} is {row[0]} ({row[1] or 'no error'}); nothing applied")
    taken = conn.execute(
        "SELECT s.key, p.batch_id FROM stage_files s JOIN processed_files p USING (key) WHERE p.batch_id <> %(b)s"
        " UNION ALL SELECT s.key, c.batch_id FROM stage_files s JOIN file_claims c USING (key)"
        " WHERE c.batch_id <> %(b)s"
        " ORDER BY 1 LIMIT 11",
        {"b": run_id},
    ).fetchall()
    if taken:
        keys = ", ".join(key for key, _ in taken[:10]) + (" ..." if len(taken) > 10 else "")
        runs = sorted({other for _, other in taken})
        raise OverlapError(f"files already processed or claimed by run {', '.join(runs)}: {keys}; nothing applied")


def commit(
    conn: psycopg.Connection, run_id: str, started_at: float, seconds: dict[str, float], stats: dict[str, Any]
) -> int:
    """The ledger row of every staged file that ended here, the committed state, claims released:
    the apply transaction's last writes. Deferred files get no row (a later plan reads them); a
    file this run's child already quarantined (quarantine()) keeps its row."""
    ledger_rows = conn.execute(
        "INSERT INTO processed_files (key, etag, size, batch_id, status, reason, records, accepted, rejected,"
        " rejects_by_reason, envelope_batch_id)"
        " SELECT key, etag, size, %s, status, reason, records, accepted, rejected, coalesce(rejects_by_reason, '{}'),"
        " envelope_batch_id"
        " FROM stage_files WHERE status = ANY(%s) ON CONFLICT (key) DO NOTHING",
        (run_id, statuses(LEDGER)),
    ).rowcount
    moved = conn.execute(
        "UPDATE batch_runs SET status = %s, started_at = to_timestamp(%s), committed_at = now(), seconds = %s,"
        " stats = %s, error = NULL, updated_at = now() WHERE batch_id = %s AND status = ANY(%s)",
        (
            RunStatus.COMMITTED.value,
            started_at,
            orjson.dumps(seconds).decode(),
            orjson.dumps(stats).decode(),
            run_id,
            _from(RunStatus.COMMITTED),
        ),
    ).rowcount
    if moved != 1:  # check_can_commit holds the row, so only a caller that skipped it gets here
        raise RunFailed(f"run {run_id} is no longer live; nothing applied")
    conn.execute("DELETE FROM file_claims WHERE batch_id = %s", (run_id,))
    return int(ledger_rows)


def staged_files(conn: psycopg.Connection) -> dict[str, int]:
    """The staged files of the run being applied, counted by status (its stats and notice)."""
    counts = dict(conn.execute("SELECT status, count(*) FROM stage_files GROUP BY status").fetchall())
    return {
        "files": sum(counts.values()),
        **{
            f"files_{status.value}": int(counts.get(status.value, 0))
            for status in FileStatus
            if status is not FileStatus.PROCESSED
        },
    }


def envelope_ids(conn: psycopg.Connection, run_id: str | None, limit: int | None = None) -> list[str]:
    """The collection server's batch_ids in the files a run processed, sorted: the ledger's for a
    committed run (`run_id`), the staging table's for the run being applied (None)."""
    table = "stage_files" if run_id is None else "processed_files"
    rows = conn.execute(
        f"SELECT DISTINCT envelope_batch_id FROM {table} WHERE status = %(processed)s AND envelope_batch_id IS NOT NULL"  # type: ignore[arg-type]
        + ("" if run_id is None else " AND batch_id = %(run_id)s")
        + " ORDER BY 1 LIMIT %(limit)s",
        {"processed": FileStatus.PROCESSED.value, "run_id": run_id, "limit": limit},
    ).fetchall()
    return [row[0] for row in rows]


# -- failing and notices -------------------------------------------------------------------


def fail(conn: psycopg.Connection, run_id: str, error: str) -> bool:
    """planned/sharded -> failed, its claims released; False when the run is not live."""
    return bool(conn.execute("SELECT witple_fail_run(%s, %s)", (run_id, error)).fetchone()[0])  # type: ignore[index]


def notice_refused(run: Run | None, notice: Notice) -> str | None:
    """None when the run's state calls for this notice now, else why not."""
    if run is None:
        return "the run is not in the database"
    if run.notice is not None:
        return f"{run.notice} was already sent for this run"
    if run.status is not NOTICE_FOLLOWS[notice]:
        return f"the run is {run.status}, not {NOTICE_FOLLOWS[notice]}"
    return None


def record_notice(
    conn: psycopg.Connection, run_id: str, notice: Notice, outcome: WebhookOutcome, attempts: int, error: str | None
) -> bool:
    """The notice this run sent (SUCCEEDED moves committed -> notified); False when the state does not allow it."""
    row = conn.execute(
        "SELECT witple_record_notice(%s, %s, %s, %s, %s)", (run_id, notice.value, outcome.value, attempts, error)
    ).fetchone()
    return bool(row[0])  # type: ignore[index]


def lock_notice(conn: psycopg.Connection, run_id: str) -> None:
    """Session lock: one process at a time decides and sends a run's notice; it dies with its holder."""
    conn.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", (NOTICE_LOCK_SPACE, run_id))


def unlock_notice(conn: psycopg.Connection, run_id: str) -> None:
    conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", (NOTICE_LOCK_SPACE, run_id))


# -- quarantine ----------------------------------------------------------------------------


def quarantined(conn: psycopg.Connection) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT key, reason, batch_id, size, processed_at FROM processed_files WHERE status = %s"
        " ORDER BY processed_at, key",
        (FileStatus.QUARANTINED.value,),
    ).fetchall()
    return [
        {"key": k, "reason": r, "batch_id": b, "size": s, "quarantined_at": t.isoformat()} for k, r, b, s, t in rows
    ]


def quarantine(conn: psycopg.Connection, item: InputFile, run_id: str, reason: str) -> bool:
    """Set a file aside in the ledger now, whatever becomes of its run (it stopped a child's attempts)."""
    row = conn.execute(
        "SELECT witple_quarantine_file(%s, %s, %s, %s, %s)", (item.key, item.etag, item.size, run_id, reason)
    ).fetchone()
    return bool(row[0])  # type: ignore[index]


def release(conn: psycopg.Connection, key: str) -> bool:
    """Take a quarantined file out of the ledger, so a later plan reads it again."""
    deleted = conn.execute(
        "DELETE FROM processed_files WHERE key = %s AND status = %s", (key, FileStatus.QUARANTINED.value)
    )
    return deleted.rowcount == 1
