"""Adopting the main server's tables: how long the migration holds them, on a realistic size.

Builds the main server's schema (local_stack/main_server.py) on the embedded PostgreSQL with
`--rows` users (each with a 384-float `double precision[]` vector) and as many place rows (1%
duplicated, as the original batch's row-per-run left them; 0.1% of vectors unusable: NaN, wrong
length, empty), then runs `python -m reduce_job migrate` as a deployment would, while a reader
queries both tables every 50 ms the way the main server's API does. Printed: the dry run's plan,
the migration's wall time, and the longest any read waited (the time the tables were locked).

    python -m benchmarks.adopt_bench [--rows 100000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg

from local_stack import main_server
from local_stack.postgres import LocalPostgres

REPO = Path(__file__).resolve().parents[1]

FILL = """
INSERT INTO users (user_id, email) SELECT 'user-' || i, 'user-' || i || '@example.com' FROM generate_series(1, %(n)s) i;
INSERT INTO user_behavior_vectors (user_id, behavior_vector, total_actions, total_clicks, total_likes)
SELECT 'user-' || i,
       CASE WHEN i %% 1000 = 0 THEN ARRAY['NaN']::float8[] || array_fill(0.1::float8, ARRAY[383])
            WHEN i %% 1000 = 1 THEN '{}'::float8[]
            ELSE (SELECT array_agg(random() + g * 0 + i * 0) FROM generate_series(1, 384) g) END,
       i %% 50, i %% 40, i %% 10
FROM generate_series(1, %(n)s) i;
INSERT INTO place_vectors (place_id, place_category, content_vector, behavior_vector, total_clicks, total_likes,
                           unique_users)
SELECT (100000 + i %% %(places)s)::text, 'restaurants',
       CASE WHEN i %% 1000 = 0 THEN array_fill(0.1::float8, ARRAY[10])
            ELSE (SELECT array_agg(random() + g * 0 + i * 0) FROM generate_series(1, 384) g) END,
       (SELECT array_agg(random() + g * 0 + i * 0) FROM generate_series(1, 384) g),
       i %% 30, i %% 7, i %% 20
FROM generate_series(1, %(n)s) i;
"""


def fill(url: str, rows: int) -> None:
    main_server.create(url)
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in FILL.split(";\n"):
            if statement.strip():  # 1% of place rows are duplicates
                conn.execute(statement, {"n": rows, "places": rows * 99 // 100})
        conn.execute("ANALYZE")


def reader(url: str, stop: threading.Event, waits: list[float]) -> None:
    """The main server's reads, one every 50 ms; each one's latency."""
    with psycopg.connect(url, autocommit=True) as conn:
        while not stop.is_set():
            started = time.perf_counter()
            conn.execute("SELECT behavior_vector::text FROM user_behavior_vectors WHERE user_id = 'user-7'").fetchall()
            conn.execute("SELECT count(*) FROM place_vectors WHERE place_category = 'restaurants'").fetchall()
            waits.append(time.perf_counter() - started)
            time.sleep(0.05)


def migrate(url: str, *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    env = {**os.environ, "DATABASE_URL": url, "DB_STATEMENT_TIMEOUT_SECONDS": "3600"}
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "reduce_job", "migrate", *args], env=env, cwd=REPO, capture_output=True, text=True
    )
    return result, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000, help="users, and place rows (default 100,000)")
    args = parser.parse_args()
    with LocalPostgres.running() as pg:
        url = pg.new_database()
        started = time.perf_counter()
        fill(url, args.rows)
        filled = time.perf_counter() - started
        print(f"main server's tables: {args.rows:,} users and {args.rows:,} place rows, filled in {filled:.0f} s")
        planned, seconds = migrate(url, "--dry-run")
        assert planned.returncode == 0, planned.stderr[-2000:]
        print(f"dry run ({seconds:.1f} s):\n{planned.stdout}")
        stop, waits = threading.Event(), []
        thread = threading.Thread(target=reader, args=(url, stop, waits))
        thread.start()
        time.sleep(0.5)
        applied, seconds = migrate(url)
        time.sleep(0.5)
        stop.set()
        thread.join()
        assert applied.returncode == 0, applied.stderr[-2000:]
        ordered = sorted(waits)
        print(f"migration: {seconds:.1f} s wall (one process, from start to exit)")
        print(
            f"reads during it: {len(waits)}, median {ordered[len(ordered) // 2] * 1000:.1f} ms,"
            f" longest {ordered[-1]:.2f} s (the time the tables were locked)"
        )


if __name__ == "__main__":
    main()
