"""`python -m reduce_job status`: the last runs as the database holds them (batch_runs), the
view an operator or the main server's status page reads. Nothing here writes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg

RECENT_RUNS = """
SELECT batch_id, status, notice, planned_at, committed_at, notified_at, failed_at, plan, stats, seconds, error,
       webhook_status, webhook_attempts
FROM batch_runs
ORDER BY coalesce(planned_at, started_at, updated_at) DESC, batch_id
LIMIT %s
"""
STAGES = ("start", "connect_and_migrate", "stage", "interactions", "vectors", "write", "serving")
# what recommend_places reads: lists still to remake (reduce_job/neighbours.py), and since when
WAITING = """
SELECT (SELECT count(*) FROM place_neighbours_due), (SELECT min(since) FROM place_neighbours_due),
       (SELECT counted_at FROM place_neighbours_state), (SELECT count(*) FROM neighbour_pending)
"""
COLUMNS = ("batch", "status", "notice", "at (UTC)", "files", "actions", "rejects", "users", "places", "s", "webhook")


def recent_runs(conn: psycopg.Connection, last: int) -> list[dict[str, Any]]:
    runs = []
    for row in conn.execute(RECENT_RUNS, (last,)).fetchall():
        (batch_id, status, notice, planned, committed, notified, failed, plan, stats, seconds, error, hook, tries) = row
        stats, seconds, plan = stats or {}, seconds or {}, plan or {}
        runs.append(
            {
                "batch_id": batch_id,
                "status": status,
                "notice": notice,
                "planned_at": _iso(planned),
                "committed_at": _iso(committed),
                "notified_at": _iso(notified),
                "failed_at": _iso(failed),
                "files": stats.get("files", plan.get("files")),
                "files_quarantined": stats.get("files_quarantined"),
                "actions": stats.get("records_accepted"),
                "rejects": stats.get("records_rejected"),
                "users": stats.get("users"),
                "places": stats.get("places"),
                "seconds": {k: round(float(v), 3) for k, v in seconds.items()},
                "webhook": hook,
                "webhook_attempts": tries,
                "error": error,
            }
        )
    return runs


def neighbour_lists(conn: psycopg.Connection) -> str:
    waiting, since, counted, pending = conn.execute(WAITING).fetchone()  # type: ignore[misc]
    if counted is None:
        return "place neighbours: not counted yet (the next run counts them)"
    oldest = f", the oldest due since {_iso(since)}" if waiting else ""
    return (
        f"place neighbours: {waiting:,} lists waiting{oldest}, {pending:,} pairs not counted yet;"
        f" counted from scratch at {_iso(counted)}"
    )


CONSOLIDATION = """
SELECT c.finished_at, c.started_at, c.users, (SELECT count(*) FROM user_content_sums WHERE placed_vector IS NOT NULL)
FROM place_consolidation c
"""


def consolidation(conn: psycopg.Connection) -> str:
    finished, started, users, lagging = conn.execute(CONSOLIDATION).fetchone()  # type: ignore[misc]
    running = f"; a pass started at {_iso(started)} has not finished" if started and started > finished else ""
    return (
        f"places consolidated up to {_iso(finished)} ({users:,} users carried);"
        f" {lagging:,} users moved since, their places lag them{running}"
    )


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat(timespec="seconds")


def table(runs: list[dict[str, Any]]) -> str:
    """One line per run, newest first; stage seconds and errors on an indented line under it."""
    if not runs:
        return "no runs recorded yet"
    lines = []
    for run in runs:
        at = run["failed_at"] or run["notified_at"] or run["committed_at"] or run["planned_at"] or ""
        quarantined = run["files_quarantined"]
        files = "" if run["files"] is None else f"{run['files']:,}" + (f" ({quarantined} q)" if quarantined else "")
        total = sum(run["seconds"].values())
        cells = [
            run["batch_id"],
            run["status"],
            run["notice"] or "-",
            at[:19].replace("T", " "),
            files,
            *(_count(run[k]) for k in ("actions", "rejects", "users", "places")),
            f"{total:.1f}" if run["seconds"] else "",
            run["webhook"] or "-",
        ]
        lines.append((cells, run))
    widths = [max(len(h), *(len(cells[i]) for cells, _ in lines)) for i, h in enumerate(COLUMNS)]
    out = ["  ".join(h.ljust(w) for h, w in zip(COLUMNS, widths, strict=True)).rstrip()]
    for cells, run in lines:
        out.append("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip())
        if run["seconds"]:
            stages = sorted(run["seconds"].items(), key=lambda kv: _stage_order(kv[0]))
            out.append("    stages: " + ", ".join(f"{k} {v:.2f}" for k, v in stages))
        if run["error"]:
            out.append(f"    error: {run['error']}")
    return "\n".join(out)


def _stage_order(stage: str) -> tuple[int, str]:
    return (STAGES.index(stage) if stage in STAGES else len(STAGES), stage)


def _count(value: int | None) -> str:
    return "" if value is None else f"{int(value):,}"
