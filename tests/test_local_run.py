"""The README's main command, end to end, on real services."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest

from local_stack.sample_data import generate
from tests.helpers import REPO, query
from tests.test_reduce_job import assert_database_matches, assert_vectors_follow_stored_content

pytestmark = pytest.mark.slow

SAMPLE = {"actions": 20_000, "users": 2_000, "places": 500}


def _runner(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / "run_local.py"), *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=900,
        cwd=REPO,
    )


def test_three_runs_add_up_then_change_nothing(s3_env, model_dir, database_url, receiver):
    env = {
        **s3_env,
        "DATABASE_URL": database_url,
        "WEBHOOK_URL": receiver.url,
        "MODEL_DIR": str(model_dir),
        "S3_BUCKET": f"e2e-{uuid.uuid4().hex[:8]}",
    }
    sizes = [f"--{k}={v}" for k, v in SAMPLE.items()]

    first = _runner(env, *sizes, "--seed=1", "--shards=3")
    assert first.returncode == 0, first.stderr[-3000:]
    assert "into 3 shards" in first.stderr
    expected = generate(**SAMPLE, seed=1).expected
    assert_database_matches(database_url, expected)
    assert [r.json["job_status"] for r in receiver.received] == ["SUCCEEDED"]
    assert "nearest places to" in first.stdout

    second = _runner(env, *sizes, "--seed=2", "--shards=3")
    assert second.returncode == 0, second.stderr[-3000:]
    assert_database_matches(database_url, expected.merge(generate(**SAMPLE, seed=2).expected))
    # day 2 touches places day 1 stored: shards take those vectors instead of embedding again,
    # and user vectors stay exact weighted means of the stored content vectors
    reused_line = next(
        line for line in second.stdout.splitlines() if line.startswith("place vectors reused / embedded")
    )
    reused, embedded = (int(n.replace(",", "")) for n in reused_line.split()[-3::2])
    assert reused > embedded
    assert_vectors_follow_stored_content(database_url)

    before = query(database_url, "SELECT user_id, total_actions, vector_weight FROM user_behavior_vectors ORDER BY 1")
    third = _runner(env, "--no-seed", "--shards=3")
    assert third.returncode == 0, third.stderr[-3000:]
    assert "into 0 shards" in third.stderr
    assert (
        query(database_url, "SELECT user_id, total_actions, vector_weight FROM user_behavior_vectors ORDER BY 1")
        == before
    )
    assert len(receiver.received) == 2


def test_runner_starts_and_stops_its_own_services(model_dir):
    clean = {k: v for k, v in os.environ.items() if k not in ("AWS_ENDPOINT_URL", "DATABASE_URL", "WEBHOOK_URL")}
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "run_local.py"),
            "--actions=1500",
            "--users=200",
            "--places=80",
            "--shards=2",
        ],
        env={**clean, "MODEL_DIR": str(model_dir)},
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "moto S3 server on http://127.0.0.1:" in result.stderr
    assert "postgres:***@127.0.0.1" in result.stderr  # the password is masked
    assert [line.split()[-1] for line in result.stdout.splitlines() if line.startswith("webhook")] == ["SUCCEEDED"]
    assert "actions read / accepted / rejected  1,500 /" in result.stdout
