"""The place consolidation on real services: killed on either side of a chunk's commit, it leaves
every committed chunk done and the next pass carries the rest; a run starts one when it is due."""

from __future__ import annotations

import signal
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import psycopg
import pytest

from local_stack.sample_data import SampleSet, catalogue, generate, install_catalogue
from tests.helpers import advisory_waiters, fresh_env, pipeline, query, run_module, start_module, wait_for
from tests.vector_oracle import assert_follows_the_definition, stored
from witple_batch.model_files import read_manifest
from witple_batch.place_text import PLACE_TEXT_VERSION
from witple_batch.schema import REDUCE_LOCK

PLACES = 30
WEIGHTS = (1.0, 3.0, 5.0)
LATER = datetime(2025, 1, 20, 9, tzinfo=UTC)
LAGGING = "SELECT count(*) FROM user_content_sums WHERE placed_vector IS NOT NULL"


@pytest.fixture(scope="module")
def sample() -> SampleSet:
    return generate(actions=1_200, users=60, places=PLACES, seed=57, batch_size=30, malformed_files=0)


def _lagging_database(s3_env, model_dir, url: str, sample: SampleSet, **extra: str) -> dict[str, str]:
    """Two runs of the same users: after the second, the places hold what the returning users were."""
    install_catalogue(url, catalogue(PLACES))
    env = fresh_env(s3_env, model_dir, DATABASE_URL=url, **extra)
    files = sorted(sample.files, key=lambda f: f.key)
    for part in (files[:20], files[20:]):
        pipeline({**env, "BATCH_ID": f"c-{uuid.uuid4().hex[:10]}"}, SampleSet(part, sample.expected), shards=1)
    assert query(url, LAGGING)[0][0] > 10
    return env


def _places(url: str) -> dict:
    return stored(url).behaviour


def _follows_the_definition(url: str, env: dict[str, str]) -> None:
    model = read_manifest(Path(env["MODEL_DIR"])).onnx_sha256
    assert_follows_the_definition(url, WEIGHTS, model, PLACE_TEXT_VERSION)


def _killed_waiting_for_a_chunk(env: dict[str, str], url: str, chunks_first: int) -> None:
    """A pass let through `chunks_first` chunks (0 or 1), then SIGKILLed while waiting for the next."""
    with psycopg.connect(url, autocommit=True) as gate, psycopg.connect(url, autocommit=True) as after:
        gate.execute("SELECT pg_advisory_lock(%s)", (REDUCE_LOCK,))
        consolidation = start_module("reduce_job", env, "consolidate")
        wait_for(lambda: advisory_waiters(url, REDUCE_LOCK) == 1, "the pass waiting for its first chunk")
        queued = threading.Thread(target=after.execute, args=("SELECT pg_advisory_lock(%s)", (REDUCE_LOCK,)))
        if chunks_first:  # queued behind the pass: it holds the lock once the pass's first chunk commits
            queued.start()
            wait_for(lambda: advisory_waiters(url, REDUCE_LOCK) == 2, "a session queued behind the pass")
            gate.execute("SELECT pg_advisory_unlock(%s)", (REDUCE_LOCK,))
            queued.join(timeout=60)
            assert not queued.is_alive()
            wait_for(lambda: advisory_waiters(url, REDUCE_LOCK) == 1, "the pass waiting for its second chunk")
        consolidation.send_signal(signal.SIGKILL)
        consolidation.wait()


def test_a_killed_pass_keeps_its_committed_chunks_and_the_next_one_carries_the_rest(
    s3_env, model_dir, postgres, sample
):
    url = postgres.new_database()
    env = _lagging_database(s3_env, model_dir, url, sample, CONSOLIDATE_PAIRS_PER_CHUNK="1")  # a user a chunk
    lagging, before = query(url, LAGGING)[0][0], _places(url)

    _killed_waiting_for_a_chunk(env, url, chunks_first=0)  # before its first commit: nothing moved
    assert query(url, LAGGING)[0][0] == lagging
    assert all(np.array_equal(v, before[k]) for k, v in _places(url).items() if v is not None)

    _killed_waiting_for_a_chunk(env, url, chunks_first=1)  # after one: exactly one user carried
    assert query(url, LAGGING)[0][0] == lagging - 1
    assert query(url, "SELECT resume_after <> '', carried FROM place_consolidation") == [(True, 1)]  # goes on there
    moved = [k for k, v in _places(url).items() if v is not None and not np.array_equal(v, before[k])]
    assert moved

    done = run_module("reduce_job", {**env, "CONSOLIDATE_PAIRS_PER_CHUNK": "200000"}, "consolidate")
    assert done.returncode == 0, done.stderr
    assert query(url, LAGGING) == [(0,)]
    assert query(url, "SELECT users, resume_after, carried FROM place_consolidation") == [(lagging, "", 0)]
    _follows_the_definition(url, env)


def test_a_run_consolidates_after_its_notice_once_one_is_due(s3_env, model_dir, postgres, sample):
    url = postgres.new_database()
    env = _lagging_database(s3_env, model_dir, url, sample)  # the second run found none due
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE place_consolidation SET finished_at = finished_at - interval '25 hours'")
    later = generate(actions=300, users=60, places=PLACES, seed=58, batch_size=30, malformed_files=0, start=LATER)
    pipeline({**env, "BATCH_ID": "c-third"}, later, shards=1)
    assert query(url, LAGGING) == [(0,)]
    [(recent, carried)] = query(url, "SELECT finished_at > now() - interval '1 hour', users FROM place_consolidation")
    assert recent and carried > 10
    _follows_the_definition(url, env)
    status = run_module("reduce_job", env, "status")
    assert "places consolidated up to" in status.stdout and "0 users moved since" in status.stdout, status.stdout
