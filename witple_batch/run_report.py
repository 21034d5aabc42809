"""report.json: what a committed run applied, for people and tools (the notice points to it).

Written after the commit from what the database holds, so it is the same whichever job writes
it: the reduce that committed, its retry, or the planner sending a SUCCEEDED still owed after
the reduce died. It names every collection-server batch_id the run applied; the notice names
at most the first 1000.
"""

from __future__ import annotations

from typing import Any

import orjson
import psycopg

from witple_batch.run_layout import RunLayout
from witple_batch.webhook import SUCCEEDED


def envelope_batch_ids(conn: psycopg.Connection, batch_id: str) -> list[str]:
    """The collection server's batch_ids in the files this run processed (bounded by its files)."""
    rows = conn.execute(
        "SELECT DISTINCT envelope_batch_id FROM processed_files"
        " WHERE batch_id = %s AND status = 'processed' AND envelope_batch_id IS NOT NULL ORDER BY 1",
        (batch_id,),
    ).fetchall()
    return [row[0] for row in rows]


def write(
    client: Any,
    layout: RunLayout,
    conn: psycopg.Connection,
    stats: dict[str, Any],
    seconds: dict[str, float],
    written_by: str,
) -> None:
    report = {
        "batch_id": layout.batch_id,
        "status": SUCCEEDED,
        "stats": stats,
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
        "envelope_batch_ids": envelope_batch_ids(conn, layout.batch_id),
        "written_by": written_by,
    }
    client.put_object(
        Bucket=layout.work_bucket,
        Key=layout.report_key,
        Body=orjson.dumps(report, option=orjson.OPT_INDENT_2),
        ContentType="application/json",
    )
