"""Hostile input against one shard: memory stays bounded, poison is quarantined, the rest is exact.

One child reads normal sample files plus three poison objects, as a single shard, on the local
moto S3 and embedded PostgreSQL, then the reduce applies the batch:

  * 256 MB of `{},{},...` gzipped to a few hundred KB (85 million empty records; before the
    streaming reader, a 32 MB version of this file peaked a child at 8.9 GB);
  * 300 MB of whitespace gzipped (past the 256 MB inflation cap);
  * a 2 GB plain object (past the 64 MB listed-size cap: never fetched).

Printed: the child's peak RSS (its own VmHWM), seconds, what the ledger says of each poison
file, and whether the totals of the other files equal the generator's.

    python -m benchmarks.poison_bench [--actions 20000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
import zlib
from pathlib import Path

import orjson
import psycopg

from local_stack.moto_s3 import MotoS3
from local_stack.postgres import LocalPostgres
from local_stack.sample_data import ensure_bucket, generate, upload
from witple_batch.run_layout import RunLayout
from witple_batch.s3 import s3_client

REPO = Path(__file__).resolve().parents[1]
MIB = 1 << 20
PARTITION = "user-actions/year=2025/month=01/day=15/hour=13/"


def _gzip_stream(piece: bytes, total: int, head: bytes = b"", tail: bytes = b"") -> bytes:
    """gzip of head + piece * n + tail (about `total` bytes) without holding the inflated bytes."""
    deflater = zlib.compressobj(6, zlib.DEFLATED, 31)
    out = [deflater.compress(head)]
    block = piece * (MIB // len(piece))
    for _ in range(total // len(block)):
        out.append(deflater.compress(block))
    out += [deflater.compress(tail), deflater.flush()]
    return b"".join(out)


def poison(client: object, bucket: str, tmp: Path) -> dict[str, str]:
    keys = {
        "empty records, 256 MB inflated": f"{PARTITION}batch-1736949600000-0-poison01.json",
        "whitespace, 300 MB inflated": f"{PARTITION}batch-1736949600001-0-poison02.json",
        "plain object, 2 GB listed": f"{PARTITION}batch-1736949600002-0-poison03.json",
    }
    bodies = {
        keys["empty records, 256 MB inflated"]: _gzip_stream(b"{},", 256 * MIB, b"[", b"{}]"),
        keys["whitespace, 300 MB inflated"]: _gzip_stream(b" ", 300 * MIB, b"[", b"]"),
    }
    for key, body in bodies.items():
        client.put_object(Bucket=bucket, Key=key, Body=body, ContentEncoding="gzip")  # type: ignore[attr-defined]
    big = tmp / "two-gb.json"
    with big.open("wb") as handle:  # sparse: 2 GB listed, nothing written
        handle.truncate(2 * 1024 * MIB)
    client.upload_file(str(big), bucket, keys["plain object, 2 GB listed"])  # type: ignore[attr-defined]
    big.unlink()
    return keys


def run(module: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", module, *args], env={**os.environ, **env}, capture_output=True, text=True, cwd=REPO
    )
    if result.returncode != 0:
        raise SystemExit(f"{module} failed: {result.stderr[-2000:]}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--actions", type=int, default=20_000)
    args = parser.parse_args()
    sample = generate(actions=args.actions, users=2_000, places=500, seed=5, malformed_files=0)
    with MotoS3.start() as moto, LocalPostgres.running() as pg, tempfile.TemporaryDirectory() as tmp:
        env = {
            **moto.client_env(),
            "S3_BUCKET": f"poison-{uuid.uuid4().hex[:8]}",
            "DATABASE_URL": pg.new_database(),
            "BATCH_ID": f"poison-{uuid.uuid4().hex[:8]}",
            "MODEL_DIR": os.environ.get("MODEL_DIR", str(REPO / ".cache" / "model")),
        }
        os.environ.update(moto.client_env())
        client = s3_client(env["AWS_REGION"])
        ensure_bucket(client, env["S3_BUCKET"], env["AWS_REGION"])
        upload(client, env["S3_BUCKET"], sample.files)
        keys = poison(client, env["S3_BUCKET"], Path(tmp))
        run("shard_job", env, "plan", "--shards", "1")
        started = time.monotonic()
        child = run("shard_job", env)
        child_seconds = time.monotonic() - started
        finished = next(orjson.loads(line) for line in child.stderr.splitlines() if '"shard finished"' in line)
        run("reduce_job", env)
        with psycopg.connect(env["DATABASE_URL"]) as conn:
            ledger = dict(
                conn.execute(
                    "SELECT key, status || ': ' || reason FROM processed_files WHERE key = ANY(%s)",
                    (list(keys.values()),),
                ).fetchall()
            )
            totals = conn.execute("SELECT sum(total_actions), count(*) FROM user_behavior_vectors").fetchone()
        report = orjson.loads(
            client.get_object(
                Bucket=env["S3_BUCKET"], Key=RunLayout(env["S3_BUCKET"], "batch-work/", env["BATCH_ID"]).report_key
            )["Body"].read()
        )
    exact = totals == (sample.expected.actions, len(sample.expected.users))
    print(f"one shard: {len(sample.files)} normal files ({sample.expected.actions:,} actions) + 3 poison objects")
    print(f"child: {child_seconds:.1f} s wall, peak RSS {finished['peak_rss_mb']:.0f} MiB (VmHWM; limit 1024 MiB)")
    print(f"{'poison object':<34} ledger")
    for name, key in keys.items():
        print(f"{name:<34} {ledger.get(key, 'MISSING')}")
    print(
        f"other files: totals {totals[0]:,} actions over {totals[1]:,} users; generator {sample.expected.actions:,} "  # type: ignore[index]
        f"over {len(sample.expected.users):,}: {'exact' if exact else 'NOT EXACT'}"
    )
    print(f"report: files {report['stats']['files']}, quarantined {report['stats']['files_quarantined']}")
    if not exact or finished["peak_rss_mb"] >= 1024 or len(ledger) != 3:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
