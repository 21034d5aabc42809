"""Soak: many batches in a row through the S3 fault proxy; the totals must stay exact after every one.

    .venv/bin/python -m benchmarks.soak_faults [--rounds 10] [--actions 5000] [--fault-rate 0.15]

The long variant of tests/test_faults.py: each round uploads new files, plans, runs the
shard children and the reduce through a proxy that answers a share of S3 requests with
503 SlowDown / 500, then compares the database with the generator's cumulative totals.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

from local_stack.array_runner import run_array
from local_stack.fault_proxy import FaultProxy
from local_stack.moto_s3 import MotoS3
from local_stack.postgres import LocalPostgres
from local_stack.sample_data import Expected, ensure_bucket, generate, upload
from witple_batch.s3 import s3_client

REPO = Path(__file__).resolve().parents[1]
BUCKET = "soak"


def mismatches(url: str, expected: Expected) -> int:
    with psycopg.connect(url) as conn:
        rows = dict(conn.execute("SELECT user_id, total_actions FROM user_behavior_vectors").fetchall())
    want = {uid: int(e["click"] + e["like"] + e["bookmark"] + e["other"]) for uid, e in expected.users.items()}
    return sum(1 for uid in set(rows) | set(want) if rows.get(uid) != want.get(uid))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--actions", type=int, default=5_000)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--fault-rate", type=float, default=0.15)
    args = parser.parse_args()
    expected = Expected()
    failures = 0
    with (
        MotoS3.start() as moto,
        LocalPostgres.running() as pg,
        FaultProxy.running(moto.endpoint, fault_rate=args.fault_rate) as proxy,
    ):
        os.environ.update(moto.client_env())
        client = s3_client(moto.client_env()["AWS_REGION"])
        ensure_bucket(client, BUCKET, moto.client_env()["AWS_REGION"])
        url = pg.new_database()
        for round_no in range(args.rounds):
            start = datetime(2025, 1, 1, tzinfo=UTC) + timedelta(days=round_no)
            sample = generate(actions=args.actions, users=500, places=200, seed=1000 + round_no, start=start)
            upload(client, BUCKET, sample.files)
            expected = expected.merge(sample.expected)
            env = {
                **moto.client_env(),
                "AWS_ENDPOINT_URL": proxy.url,
                "S3_BUCKET": BUCKET,
                "DATABASE_URL": url,
                "BATCH_ID": f"soak-{round_no}",
                "MODEL_DIR": os.environ.get("MODEL_DIR", str(REPO / ".cache/model")),
            }
            started = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "shard_job", "plan", "--shards", str(args.shards)],
                env={**os.environ, **env},
                check=True,
                capture_output=True,
            )
            array = run_array(env, args.shards, args.shards, 3, REPO / ".cache" / "soak" / env["BATCH_ID"])
            reduced = subprocess.run(
                [sys.executable, "-m", "reduce_job"], env={**os.environ, **env}, capture_output=True, text=True
            )
            bad = mismatches(url, expected)
            ok = array.succeeded and reduced.returncode == 0 and bad == 0
            failures += not ok
            print(
                f"round {round_no + 1}/{args.rounds}: {time.perf_counter() - started:.1f}s, "
                f"faults injected so far {proxy.injected}, child attempts {sum(array.attempts.values())}, "
                f"users off {bad}: {'exact' if ok else 'NOT EXACT'}",
                flush=True,
            )
    print(f"{args.rounds} rounds, {proxy.injected} S3 faults injected, {failures} rounds not exact")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
