"""The incremental planner's watermark: the oldest hour partition that may hold a file no run took.

It never passes a file that could still need planning: it stays at or before the oldest file a
live run holds (its run may fail and release it; a plan claims the oldest new files first, so
files a --max-files plan leaves are never older) and the current hour. So a failed run's files,
a capped plan's leftovers and the files of the hour being written are all listed again; files
written late into an older hour are found by the lookback, or by a full listing (`--full`, e.g.
daily). A run that defers files (a full shard, a file changed after planning) brings it back to
their hour when it commits (rewind_to_deferred), and so does a release from quarantine.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import psycopg

from witple_batch.run_state import FileStatus

_PARTITION = re.compile(r"year=(\d{4})/month=(\d{1,2})/day=(\d{1,2})/hour=(\d{1,2})/")


def partition_hour(key: str) -> datetime | None:
    """The hour partition a key sits in (naive UTC), None outside the partitions or for an impossible date;
    witple_partition_hour (migration 009) reads keys the same way in SQL."""
    match = _PARTITION.search(key)
    if not match:
        return None
    try:
        return datetime(*(int(g) for g in match.groups()))
    except ValueError:
        return None


def input_source(bucket: str, prefix: str) -> str:
    """An input location as planner_watermarks names it (one watermark per bucket and prefix)."""
    return f"s3://{bucket}/{prefix}"


# the oldest hour a file may still need planning: a live claim's, or one this plan saw claimed
# that has since been released without a ledger row (its run failed while this plan listed);
# witple_partition_hour (migration 009) reads hours as partition_hour does
_UNSETTLED_HOURS = """
SELECT least(
    (SELECT min(witple_partition_hour(key)) FROM file_claims),
    (SELECT min(witple_partition_hour(k)) FROM unnest(%(seen)s::text[]) k
     WHERE NOT EXISTS (SELECT 1 FROM processed_files p WHERE p.key = k))
)
"""


def read(conn: psycopg.Connection, source: str) -> datetime | None:
    """The recorded resume hour (aware UTC), None before the first plan of this input."""
    row = conn.execute("SELECT resume_hour FROM planner_watermarks WHERE source = %s", (source,)).fetchone()
    return None if row is None else row[0]


def start_hour(resume: datetime | None, lookback: timedelta) -> datetime | None:
    """Where this plan lists from (naive UTC); None when no plan has set it yet (list everything)."""
    return None if resume is None else resume.astimezone(UTC).replace(tzinfo=None) - lookback


def advance(
    conn: psycopg.Connection, source: str, now: datetime, seen_claimed: list[str], listed_from: datetime | None
) -> datetime:
    """Inside the planner's transaction (under the planner lock), after its claims: record where
    the next plan resumes. `seen_claimed`: keys this plan's listing left out because a run held
    them; one released since (its run failed meanwhile) keeps the watermark at its hour.
    `listed_from`: the watermark this plan read before listing; one rewound below it since (a
    run's deferred files, a release from quarantine: hours this listing did not see) is kept."""
    resume = now.replace(minute=0, second=0, microsecond=0).replace(tzinfo=UTC)
    unsettled = conn.execute(_UNSETTLED_HOURS, {"seen": seen_claimed}).fetchone()[0]  # type: ignore[index]
    if unsettled is not None:
        resume = min(resume, unsettled)
    row = conn.execute(
        "INSERT INTO planner_watermarks AS w (source, resume_hour) VALUES (%(source)s, %(resume)s)"
        " ON CONFLICT (source) DO UPDATE SET resume_hour = CASE WHEN w.resume_hour < %(listed_from)s"
        " THEN least(w.resume_hour, EXCLUDED.resume_hour) ELSE EXCLUDED.resume_hour END, updated_at = now()"
        " RETURNING resume_hour",
        {"source": source, "resume": resume, "listed_from": listed_from},
    ).fetchone()
    return row[0].astimezone(UTC).replace(tzinfo=None)  # type: ignore[index]


def rewind(conn: psycopg.Connection, source: str, key: str) -> bool:
    """Bring the watermark back to `key`'s hour so the next plan lists it (a released file);
    False when the key has no partition hour (only a full listing finds it)."""
    hour = partition_hour(key)
    if hour is None:
        return False
    conn.execute(
        "UPDATE planner_watermarks SET resume_hour = least(resume_hour, %s), updated_at = now() WHERE source = %s",
        (hour.replace(tzinfo=UTC), source),
    )
    return True


def rewind_to_deferred(conn: psycopg.Connection, source: str) -> None:
    """Inside the apply transaction: bring the watermark back to the oldest hour of the files the
    run deferred. Its claims held the watermark there; released, the deferred files would be left
    behind whenever a windowed plan (which moves no watermark) took them."""
    conn.execute(
        "UPDATE planner_watermarks w SET resume_hour = least(w.resume_hour, d.hour), updated_at = now()"
        " FROM (SELECT min(witple_partition_hour(key)) AS hour FROM stage_files WHERE status = %s) d"
        " WHERE w.source = %s AND d.hour IS NOT NULL",
        (FileStatus.DEFERRED.value, source),
    )
