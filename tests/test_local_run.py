"""The README's main command, end to end, on real services."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import psycopg
import pytest

from local_stack.sample_data import generate
from tests.helpers import REPO, query
from tests.test_reduce_job import assert_database_matches, assert_vectors_follow_stored_content

pytestmark = pytest.mark.slow

SAMPLE = {"actions": 8_000, "users": 1_000, "places": 300}


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

    first_id = f"local-{uuid.uuid4().hex[:8]}"
    first = _runner(env, *sizes, "--seed=1", "--shards=3", f"--batch-id={first_id}")
    assert first.returncode == 0, first.stderr[-3000:]
    assert "into 3 shards" in first.stderr
    expected = generate(**SAMPLE, seed=1).expected
    assert_database_matches(database_url, expected)
    # the catalogue sync ran first and embedded every place, so the batch embedded none
    assert _row(first.stdout, "catalogue sync: places / children") == "300 / 1"
    assert _row(first.stdout, "place vectors reused / embedded").endswith(" / 0")
    assert [(r.json["batch_id"][-5:], r.json["job_status"]) for r in receiver.received] == [
        ("-sync", "SUCCEEDED"),
        (first_id[-5:], "SUCCEEDED"),
    ]
    assert "nearest places to" in first.stdout
    assert_recommendations_in_score_order(first.stdout)

    second = _runner(env, *sizes, "--seed=2", "--shards=3")
    assert second.returncode == 0, second.stderr[-3000:]
    assert_database_matches(database_url, expected.merge(generate(**SAMPLE, seed=2).expected))
    # day 2 touches places day 1 stored: shards take those vectors instead of embedding again,
    # and user vectors stay exact weighted means of the stored content vectors
    assert _row(second.stdout, "catalogue sync").startswith("nothing to embed")  # the catalogue did not change
    reused, embedded = (
        int(n.replace(",", "")) for n in _row(second.stdout, "place vectors reused / embedded").split(" / ")
    )
    assert embedded == 0 and reused >= len(generate(**SAMPLE, seed=2).expected.places)  # per shard: some twice
    assert_vectors_follow_stored_content(database_url)

    before = query(database_url, "SELECT user_id, total_actions, vector_weight FROM user_behavior_vectors ORDER BY 1")
    third = _runner(env, "--no-seed", "--shards=3")
    assert third.returncode == 0, third.stderr[-3000:]
    assert "into 0 shards" in third.stderr
    assert (
        query(database_url, "SELECT user_id, total_actions, vector_weight FROM user_behavior_vectors ORDER BY 1")
        == before
    )
    assert len(receiver.received) == 3  # nothing to sync, nothing to run: no notice


def _row(stdout: str, name: str) -> str:
    """The value of one row of the runner's summary table."""
    return next(line[len(name) :].strip() for line in stdout.splitlines() if line.startswith(f"{name}  "))


def assert_recommendations_in_score_order(stdout: str) -> None:
    """The listing under "recommend_places" is the function's order: best first."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("recommend_places"))
    scores = [float(line.split()[-1]) for line in lines[start + 1 :] if line.startswith("  ")]
    assert len(scores) == 5
    assert scores == sorted(scores, reverse=True)


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
    assert _row(result.stdout, "webhooks") == "SUCCEEDED, SUCCEEDED"  # the catalogue sync's, then the batch's
    assert "actions read / accepted / rejected  1,500 /" in result.stdout
    assert_recommendations_in_score_order(result.stdout)
    # what a newcomer sees: the runner's own lines, no library's INFO chatter
    assert [line for line in result.stderr.splitlines() if "INFO" in line] == []


def test_the_runners_recommendations_keep_the_functions_order_whatever_the_join(s3_env, model_dir, database_url):
    """The summary names each recommended place: a join that hashes the function's rows against
    place_vectors returns them in the table's order unless the query orders them again."""
    import importlib.util

    from local_stack.sample_data import catalogue, install_catalogue
    from tests.helpers import fresh_env, pipeline

    env = fresh_env(s3_env, model_dir, DATABASE_URL=database_url)
    install_catalogue(database_url, catalogue(60))
    pipeline(env, generate(actions=2_000, users=100, places=60, seed=5, malformed_files=0), shards=1)
    name = database_url.rsplit("/", 1)[1]
    with psycopg.connect(database_url, autocommit=True) as conn:
        for setting in ("enable_nestloop", "enable_mergejoin"):  # whatever plan: a hash join here
            conn.execute(f'ALTER DATABASE "{name}" SET {setting} = off')
    spec = importlib.util.spec_from_file_location("run_local", REPO / "scripts" / "run_local.py")
    run_local = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(run_local)  # type: ignore[union-attr]
    lines = run_local.nearest_places(database_url, {row.name: row.theme for row in catalogue(60)})
    user = lines[0].split()[0]
    start = next(i for i, line in enumerate(lines) if line.startswith("recommend_places"))
    shown = [tuple(line.split()[:2]) for line in lines[start + 1 :]]
    assert shown == query(database_url, "SELECT place_category, place_id FROM recommend_places(%s, 5)", (user,))
