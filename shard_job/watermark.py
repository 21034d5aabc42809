"""The incremental planner's watermark: the oldest hour partition that may hold a file no run took.

It never passes a file that could still need planning: it stays at or before the oldest file a
live run holds (its run may fail and release it; a plan claims the oldest new files first, so
files a --max-files plan leaves are never older) and the current hour. So a failed run's files,
a capped plan's leftovers and the files of the hour being written are all listed again; files
written late into an older hour are found by the lookback, or by a full listing (`--full`, e.g.
daily).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg

from shard_job.planning import partition_hour

# the oldest hour a file may still need planning: a live claim's, or one this plan saw claimed
# that has since been released without a ledger row (its run failed while this plan listed);
# witple_partition_hour (migration 009) reads hours as planning.partition_hour does
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
