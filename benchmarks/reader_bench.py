"""What the main server's readers feel while a reduce runs: the 10 nearest places every 50 ms.

Day 1 loads every place; day 2 touches every place again; a reader thread on its own
connection asks for the 10 places nearest a fixed vector (the HNSW index) every 50 ms while
day 2's reduce runs, and records each query's latency. The same is done, in the same run, with
the code of an earlier commit (default 6b184f7, whose reduce dropped and rebuilt the HNSW index
inside its transaction once a batch touched more than 15% of places), checked out into .cache/.

    python -m benchmarks.reader_bench [--actions 60000] [--places 5000] [--compare-ref 6b184f7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import orjson
import psycopg

from local_stack.moto_s3 import MotoS3
from local_stack.postgres import LocalPostgres
from local_stack.sample_data import CATEGORIES, SampleFile, ensure_bucket, generate, upload

REPO = Path(__file__).resolve().parents[1]
QUERY = (
    "SELECT place_id FROM place_vectors ORDER BY content_vector <=> "
    "(SELECT content_vector FROM place_vectors ORDER BY id LIMIT 1) LIMIT 10"
)


def every_place(places: int, prefix: str) -> SampleFile:
    """One click on every place, so day 2 touches all of them."""
    actions = [
        {
            "user_id": f"user-{i % 500:06d}",
            "place_category": CATEGORIES[i % len(CATEGORIES)],
            "place_id": str(100_000 + i),
            "action_type": "click",
            "timestamp": "2025-01-16T10:00:00Z",
        }
        for i in range(places)
    ]
    key = f"{prefix}year=2025/month=01/day=16/hour=10/batch-1737021600000-{places}-allplace.json"
    return SampleFile(key, orjson.dumps({"actions": actions}))


def checkout(ref: str) -> Path:
    tree = REPO / ".cache" / f"compare-{ref}"
    if not tree.exists():
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), ref], check=True)
    return tree


def run(code: Path, module: str, env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", module, *args],
        env={**os.environ, **env, "PYTHONPATH": str(code)},
        capture_output=True,
        text=True,
        cwd=code,
    )
    if result.returncode != 0:
        raise SystemExit(f"{module} {args} failed in {code}: {result.stderr[-2000:]}")
    return result.stdout


def day(code: Path, env: dict[str, str], batch_id: str, reader: Reader | None = None) -> float:
    env = {**env, "BATCH_ID": batch_id}
    shards = orjson.loads(run(code, "shard_job", env, "plan", "--shards", "1"))["shards"]
    for index in range(shards):
        run(code, "shard_job", {**env, "AWS_BATCH_JOB_ARRAY_INDEX": str(index)})
    if reader is not None:
        reader.start()
    started = time.monotonic()
    run(code, "reduce_job", env)
    seconds = time.monotonic() - started
    if reader is not None:
        reader.stop()
    return seconds


class Reader:
    def __init__(self, url: str) -> None:
        self.url = url
        self.latencies: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self._stop.is_set():
                started = time.perf_counter()
                conn.execute(QUERY).fetchall()
                self.latencies.append(time.perf_counter() - started)
                self._stop.wait(0.05)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def contender(code: Path, moto: MotoS3, pg: LocalPostgres, args: argparse.Namespace) -> tuple[float, list[float]]:
    env = {
        **moto.client_env(),
        "S3_BUCKET": f"reader-{uuid.uuid4().hex[:8]}",
        "DATABASE_URL": pg.new_database(),
        "MODEL_DIR": os.environ.get("MODEL_DIR", str(REPO / ".cache" / "model")),
    }
    client = __import__("witple_batch.s3", fromlist=["s3_client"]).s3_client(env["AWS_REGION"])
    ensure_bucket(client, env["S3_BUCKET"], env["AWS_REGION"])
    first = generate(actions=args.actions, users=5_000, places=args.places, seed=1, malformed_files=0)
    upload(client, env["S3_BUCKET"], [*first.files, every_place(args.places, "user-actions/")])
    day(code, env, f"day1-{uuid.uuid4().hex[:6]}")
    start = datetime(2025, 1, 17, 9, tzinfo=UTC)
    second = generate(actions=args.actions, users=5_000, places=args.places, seed=2, malformed_files=0, start=start)
    upload(
        client, env["S3_BUCKET"], [*second.files, every_place(args.places, "user-actions/year=2025/month=01/day=17/")]
    )
    reader = Reader(env["DATABASE_URL"])
    seconds = day(code, env, f"day2-{uuid.uuid4().hex[:6]}", reader)
    return seconds, reader.latencies


def summary(latencies: list[float]) -> str:
    ms = sorted(x * 1000 for x in latencies)
    p99 = ms[min(len(ms) - 1, int(0.99 * len(ms)))]
    return f"{len(ms):>7} {statistics.median(ms):>9.1f} {p99:>9.1f} {ms[-1]:>9.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--actions", type=int, default=60_000)
    parser.add_argument("--places", type=int, default=5_000)
    parser.add_argument("--compare-ref", default="6b184f7")
    args = parser.parse_args()
    old = checkout(args.compare_ref)
    with MotoS3.start() as moto, LocalPostgres.running() as pg:
        os.environ.update(moto.client_env())
        results = {
            "ours (index kept row by row, no table lock)": contender(REPO, moto, pg, args),
            f"{args.compare_ref} (index dropped and rebuilt in the transaction)": contender(old, moto, pg, args),
        }
    print(f"reader: 10 nearest of {args.places:,} places every 50 ms during a reduce touching every place")
    print(f"{'contender':<62} {'reduce s':>8} {'queries':>7} {'p50 ms':>9} {'p99 ms':>9} {'max ms':>9}")
    for name, (seconds, latencies) in results.items():
        print(f"{name:<62} {seconds:>8.1f} {summary(latencies)}")


if __name__ == "__main__":
    main()
