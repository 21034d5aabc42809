"""Incremental planning: a plan lists the hours since its watermark, never loses a file that
may still need planning, and a full listing finds what arrived later than the lookback."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from coordinator.listing import hour_prefix
from coordinator.sizing import partition_hour
from local_stack.sample_data import SampleFile, SampleSet, generate
from tests.helpers import fresh_env, plan_run, query, reduce_in_process, run_child, seed

NOW = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)


@pytest.fixture(scope="module")
def recent() -> SampleSet:
    """Files in the hours from about 8 to 2 hours ago."""
    return generate(actions=400, users=40, places=20, seed=61, batch_size=40, start=NOW - timedelta(hours=8))


def written_late(item: SampleFile, hours_ago: int, tag: str) -> SampleFile:
    """The same body under the partition of `hours_ago`: a file the collection server wrote late."""
    name = item.key.rsplit("/", 1)[-1].replace(".json", f"-{tag}.json")
    return SampleFile(
        hour_prefix("user-actions/", NOW - timedelta(hours=hours_ago)) + name, item.body, item.content_encoding
    )


def _env(s3_env, model_dir, database_url, tag: str) -> dict[str, str]:
    return fresh_env(s3_env, model_dir, DATABASE_URL=database_url, BATCH_ID=f"inc-{tag}")


def test_an_incremental_plan_lists_the_hours_since_its_watermark(s3_env, model_dir, database_url, recent):
    env = _env(s3_env, model_dir, database_url, "a")
    seed(env, recent)
    first = plan_run(env, shards=1)
    assert (first["listing"], first["files"]) == ("full", len(recent.files))  # no watermark yet
    [(resume,)] = query(database_url, "SELECT resume_hour FROM planner_watermarks")
    oldest = min(partition_hour(f.key) for f in recent.files)
    assert resume == oldest.replace(tzinfo=UTC)  # held at the oldest file its live run holds

    late, very_late = written_late(recent.files[0], 30, "late"), written_late(recent.files[1], 24 * 5, "old")
    seed(env, SampleSet([late, very_late], recent.expected))
    second = plan_run({**env, "BATCH_ID": "inc-a2"}, shards=1)
    assert second["listing"] == f"hours from {oldest - timedelta(hours=24):%Y-%m-%dT%H}"
    assert second["files"] == 1  # 30 hours late: inside the lookback; 5 days late: not listed
    full = plan_run({**env, "BATCH_ID": "inc-a3"}, shards=1, full=True)
    assert (full["listing"], full["files"]) == ("full", 1)  # the scheduled full listing finds it


def test_a_failed_runs_files_are_listed_again_whatever_came_after(s3_env, model_dir, database_url, recent):
    env = _env(s3_env, model_dir, database_url, "b")
    seed(env, SampleSet(recent.files[:5], recent.expected))
    failing = plan_run(env, shards=1)
    seed(env, SampleSet([written_late(recent.files[5], 0, "now")], recent.expected))
    later = plan_run({**env, "BATCH_ID": "inc-b2"}, shards=1, lookback_hours=0)
    assert later["files"] == 1
    with psycopg.connect(database_url, autocommit=True) as conn:  # the first run's lease runs out
        conn.execute("UPDATE batch_runs SET lease_expires_at = now() WHERE batch_id = 'inc-b'")
    again = plan_run({**env, "BATCH_ID": "inc-b3"}, shards=1, lookback_hours=0)
    assert again["files"] == failing["files"] == 5  # the watermark never passed the live run's files


def test_files_left_by_a_capped_plan_are_listed_next_time(s3_env, model_dir, database_url, recent):
    env = _env(s3_env, model_dir, database_url, "c")
    seed(env, SampleSet(recent.files[:6], recent.expected))
    assert plan_run(env, shards=1, max_files=2)["files"] == 2
    with psycopg.connect(database_url, autocommit=True) as conn:  # as if that run committed long ago
        conn.execute("DELETE FROM file_claims")
        conn.execute(
            "INSERT INTO processed_files (key, etag, size, batch_id, status)"
            " SELECT key, 'e', 1, 'inc-c', 'processed' FROM unnest(%s::text[]) key",
            (sorted(f.key for f in recent.files[:6])[:2],),
        )
    assert plan_run({**env, "BATCH_ID": "inc-c2"}, shards=1, lookback_hours=0)["files"] == 4


def test_a_run_failing_while_a_plan_lists_keeps_its_files_in_reach(s3_env, model_dir, database_url, recent):
    """The plan saw the files claimed and left them out; the run failed before the plan advanced the
    watermark: the watermark must stay at their hour, or only a full listing would find them."""
    from witple_batch import run_state, watermark
    from witple_batch.database import connect
    from witple_batch.run_layout import InputFile
    from witple_batch.watermark import input_source

    env = _env(s3_env, model_dir, database_url, "r")
    old = SampleSet([written_late(f, 30, "r") for f in recent.files[:3]], recent.expected)  # 30 hours ago
    seed(env, old)
    plan_run(env, shards=1)  # run A claims the three files
    source = input_source(env["S3_BUCKET"], "user-actions/")
    files = [InputFile(f.key, len(f.body), "e") for f in old.files]
    with connect(database_url, autocommit=True) as conn:
        untaken, claimed = run_state.untaken(conn, files)  # what a second plan's listing sees
        assert untaken == [] and claimed == sorted(f.key for f in files)
        assert run_state.fail(conn, env["BATCH_ID"], "stopped")  # run A fails meanwhile: claims released
        with conn.transaction():
            read = watermark.read(conn, source)  # what the second plan read before listing
            resume = watermark.advance(conn, source, NOW.replace(tzinfo=None), claimed, read)
        assert resume == partition_hour(old.files[0].key)  # not NOW: the freed files are listed again
        with conn.transaction():
            read = watermark.read(conn, source)
            assert watermark.advance(conn, source, NOW.replace(tzinfo=None), [], read) == NOW.replace(tzinfo=None)
    # and the SQL reading of hours never fails a plan on an impossible date
    assert query(database_url, "SELECT witple_partition_hour('x/year=2025/month=13/day=40/hour=99/b.json')") == [
        (None,)
    ]


def test_files_a_windowed_run_deferred_are_listed_by_the_next_incremental_plan(s3_env, model_dir, database_url, recent):
    """A window moves no watermark: the run's commit brings it back to its deferred files' hours."""
    env = {**_env(s3_env, model_dir, database_url, "w"), "MAX_ACTIONS_PER_SHARD": "100"}
    assert plan_run(env, shards=1)["files"] == 0  # an incremental plan of nothing: the watermark is now
    backfill = [written_late(f, 24 * 5, "w") for f in recent.files[:6]]  # 5 days ago
    seed(env, SampleSet(backfill, recent.expected))
    hour = partition_hour(backfill[0].key)
    window = plan_run({**env, "BATCH_ID": "inc-w1"}, shards=1, since=hour, until=hour + timedelta(hours=1))
    assert window["files"] == 6
    deferred = run_child({**env, "BATCH_ID": "inc-w1"}, 0)["files_deferred"]
    assert deferred > 0  # past 100 accepted actions
    reduce_in_process({**env, "BATCH_ID": "inc-w1"})
    later = plan_run({**env, "BATCH_ID": "inc-w2"}, shards=1)
    assert later["files"] == deferred, later["listing"]  # listed from their hour, not only the last day


def test_a_rewind_while_a_plan_lists_survives_its_advance(database_url):
    """A run committing deferred files (or a release from quarantine) rewinds the watermark while
    a plan lists the hours after the one it read: the plan's advance keeps the rewind."""
    from witple_batch import watermark
    from witple_batch.database import connect
    from witple_batch.schema import migrate

    source, now = "s3://input/user-actions/", NOW.replace(tzinfo=None)
    read, rewound = NOW - timedelta(hours=2), NOW - timedelta(days=30)
    with connect(database_url, autocommit=True) as conn:
        migrate(conn)
        conn.execute("INSERT INTO planner_watermarks (source, resume_hour) VALUES (%s, %s)", (source, read))
        conn.execute("UPDATE planner_watermarks SET resume_hour = %s", (rewound,))  # the commit, mid-listing
        assert watermark.advance(conn, source, now, [], read) == rewound.replace(tzinfo=None)
        assert watermark.advance(conn, source, now, [], rewound) == now  # nothing rewound since: it moves on
