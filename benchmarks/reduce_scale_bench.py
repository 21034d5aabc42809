"""The reduce at millions of distinct users: memory flat, time linear in users + pairs.

For each size, synthetic shard partials in the real format (witple-partial-v3, written by the
shard child's own `write_partial`, with their plans and `_SUCCESS.json`) go to the local moto S3:
`--pairs-per-user` (user, place) pairs per distinct user, places drawn Zipf-like from a catalogue
that grows with the batch, pairs spread over shards of `--pairs-per-shard`, so a user appears in
several shards as in real input. Then `python -m reduce_job` applies the batch to a fresh
embedded PostgreSQL, as the job does (stage every shard by binary COPY, merge, vectors, write,
commit), and its report gives wall time per stage and its own peak RSS (VmHWM).

Printed: users, places, pairs, shards, seconds per stage, rows/s, peak RSS, and a least-squares
fit of time against users + pairs with the projection to a 10 M-user batch.

    python -m benchmarks.reduce_scale_bench [--users 100000,300000,1000000] [--plot benchmarks/figures/reduce_scale.png]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from coordinator.plan import write_plan
from local_stack.moto_s3 import MotoS3
from local_stack.postgres import LocalPostgres
from local_stack.sample_data import ensure_bucket
from shard_job.child import write_partial
from witple_batch.partials import ShardPartial
from witple_batch.place_text import PLACE_TEXT_VERSION
from witple_batch.run_layout import InputFile, RunLayout, load_report
from witple_batch.run_state import FileStatus
from witple_batch.s3 import s3_client
from witple_batch.settings import common_from_env

REPO = Path(__file__).resolve().parents[1]
MODEL = "0" * 64  # the content model every synthetic shard claims
START_US = 1_736_950_000_000_000


def places_for(users: int) -> int:
    """20 k places at 100 k users, growing with the square root of users (200 k at 10 M)."""
    return int(20_000 * (users / 100_000) ** 0.5)


def content(places: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((places, 384)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def shard_partial(rng: np.random.Generator, users: int, vectors: np.ndarray, pairs: int, key: str) -> ShardPartial:
    """`pairs` random (user, place) pairs of one shard, as the child would have written them."""
    user = rng.integers(0, users, size=pairs)
    ranks = rng.zipf(1.3, size=pairs)
    place = (ranks - 1) % len(vectors)
    combined = np.unique(user.astype(np.int64) * len(vectors) + place)
    user_of, place_of = combined // len(vectors), combined % len(vectors)
    user_keys, pair_user = np.unique(user_of, return_inverse=True)
    place_keys, pair_place = np.unique(place_of, return_inverse=True)
    k = len(combined)
    counts = np.zeros((k, 4), dtype=np.int64)
    counts[:, 0] = rng.integers(1, 4, size=k)
    counts[:, 1] = rng.integers(0, 2, size=k)
    counts[:, 2] = (rng.random(k) < 0.1).astype(np.int64)
    first = START_US + rng.integers(0, 3_600_000_000, size=k)
    hashes = np.stack([np.frombuffer(hashlib.sha256(b"p%d" % p).digest(), np.uint8) for p in place_keys])
    return ShardPartial(
        user_ids=[f"u{u:09d}" for u in user_keys],
        place_categories=["restaurants"] * len(place_keys),
        place_ids=[f"p{p:07d}" for p in place_keys],
        place_content=vectors[place_keys],
        place_text_sha256=hashes,
        place_catalogued=np.ones(len(place_keys), dtype=np.uint8),
        pair_user=pair_user.astype(np.int32),
        pair_place=pair_place.astype(np.int32),
        pair_counts=counts,
        pair_first_us=first,
        pair_last_us=first + rng.integers(0, 600_000_000, size=k),
        files=[
            {
                "key": key,
                "etag": "e",
                "size": 1,
                "status": FileStatus.PROCESSED.value,
                "records": int(counts.sum()),
                "accepted": int(counts.sum()),
                "rejected": 0,
                "envelope_batch_id": key[-12:],
            }
        ],
        content_model=MODEL,
        place_text_version=PLACE_TEXT_VERSION,
    )


def write_batch(env: dict[str, str], users: int, pairs_per_user: int, pairs_per_shard: int) -> tuple[int, int, int]:
    """The plan and every shard's partial on S3; returns (places, pairs, shards)."""
    config = common_from_env(env)
    client = s3_client(config.region)
    places = places_for(users)
    vectors = content(places, seed=users)
    total = users * pairs_per_user
    shards = max(2, -(-total // pairs_per_shard))
    files = [[InputFile(f"user-actions/batch-{i:05d}.json", 1, "e")] for i in range(shards)]
    write_plan(client, config, env["BATCH_ID"], files, [], None, replace_orphan=False)
    layout = RunLayout(config.work_bucket, config.work_prefix, env["BATCH_ID"])
    written = 0
    rng = np.random.default_rng(users)
    with tempfile.TemporaryDirectory() as scratch:
        rejects = Path(scratch) / "rejects.jsonl.gz"
        rejects.write_bytes(b"")
        for index in range(shards):
            partial = shard_partial(rng, users, vectors, total // shards, files[index][0].key)
            written += len(partial.pair_user)
            metrics = {"peak_rss_mb": 0.0, "seconds": {}}
            write_partial(client, layout, index, partial, rejects, metrics, config.partials_key)
    return places, written, shards


def reduce(env: dict[str, str]) -> tuple[float, dict]:
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "reduce_job"], env={**os.environ, **env}, cwd=REPO, capture_output=True, text=True
    )
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"reduce failed: {result.stderr[-3000:]}")
    config = common_from_env(env)
    report = load_report(s3_client(config.region), RunLayout(config.work_bucket, config.work_prefix, env["BATCH_ID"]))
    return seconds, report


def plot(rows: list[tuple], slope: float, intercept: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    users = np.array([r[0] for r in rows], dtype=float)
    work = np.array([r[0] + r[2] for r in rows], dtype=float)
    seconds = np.array([r[4] for r in rows])
    rss = np.array([r[5]["stats"]["reduce_peak_rss_mb"] for r in rows])
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(work / 1e6, seconds, "o", label="measured")
    span = np.linspace(0, work.max() / 1e6, 50)
    left.plot(span, slope * span * 1e6 + intercept, "-", label=f"fit: {slope * 1e6:.1f} s per million rows")
    left.set(xlabel="users + pairs (millions)", ylabel="reduce wall time (s)", title="time: linear in rows")
    left.legend()
    right.plot(users / 1e6, rss, "o-")
    right.axhline(1024, color="grey", linestyle="--", label="1 GiB")
    right.set(xlabel="distinct users (millions)", ylabel="reduce peak RSS (MiB)", title="memory: flat", ylim=(0, 1200))
    right.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", default="100000,300000,1000000", help="distinct users per batch, comma-separated")
    parser.add_argument("--pairs-per-user", type=int, default=10)
    parser.add_argument("--pairs-per-shard", type=int, default=500_000)
    parser.add_argument("--plot", type=Path, help="also draw time and peak RSS against size (PNG)")
    args = parser.parse_args()
    rows = []
    with MotoS3.start() as moto, LocalPostgres.running() as pg:
        os.environ.update(moto.client_env())
        for users in (int(u) for u in args.users.split(",")):
            env = {
                **moto.client_env(),
                "S3_BUCKET": "input",
                "WORK_BUCKET": f"work-{uuid.uuid4().hex[:8]}",
                "DATABASE_URL": pg.new_database(),
                "BATCH_ID": f"scale-{users}",
                "LOG_LEVEL": "WARNING",
                "DB_STATEMENT_TIMEOUT_SECONDS": "7200",
            }
            ensure_bucket(s3_client(env["AWS_REGION"]), env["WORK_BUCKET"], env["AWS_REGION"])
            started = time.perf_counter()
            places, pairs, shards = write_batch(env, users, args.pairs_per_user, args.pairs_per_shard)
            print(
                f"  {users:,} users: {shards} shards, {pairs:,} pairs written in {time.perf_counter() - started:.0f} s"
            )
            seconds, report = reduce(env)
            stats = report["stats"]
            assert stats["users"] == users or stats["users"] <= users, stats["users"]
            rows.append((users, places, pairs, shards, seconds, report))
            stages = ", ".join(f"{k} {v:.0f}" for k, v in report["seconds"].items())
            print(
                f"  {stats['users']:,} users, {places:,} places, {pairs:,} pairs: reduce {seconds:.0f} s"
                f" ({stages}), peak RSS {stats['reduce_peak_rss_mb']:.0f} MiB"
            )
    print(f"\n{'users':>10} {'places':>8} {'pairs':>11} {'shards':>6} {'reduce s':>9} {'rows/s':>8} {'peak MiB':>9}")
    for users, places, pairs, shards, seconds, report in rows:
        rss = report["stats"]["reduce_peak_rss_mb"]
        print(
            f"{users:>10,} {places:>8,} {pairs:>11,} {shards:>6} {seconds:>9.0f}"
            f" {(users + pairs) / seconds:>8,.0f} {rss:>9.0f}"
        )
    x = np.array([u + p for u, _, p, *_ in rows], dtype=float)
    y = np.array([r[4] for r in rows])
    slope, intercept = np.polyfit(x, y, 1)
    fitted = slope * x + intercept
    r2 = 1 - ((y - fitted) ** 2).sum() / max(((y - y.mean()) ** 2).sum(), 1e-9)
    ten_m = slope * (10_000_000 * (1 + args.pairs_per_user)) + intercept
    print(f"\nfit: seconds = {slope * 1e6:.2f} per million (users + pairs) + {intercept:.1f}  (R^2 {r2:.3f})")
    print(f"projected 10 M users x {args.pairs_per_user} pairs: {ten_m:,.0f} s on this machine (job timeout 3600 s)")
    rss = [r[5]["stats"]["reduce_peak_rss_mb"] for r in rows]
    print(f"peak RSS from {rss[0]:.0f} to {rss[-1]:.0f} MiB ({(max(rss) / min(rss) - 1) * 100:+.0f}% at most)")
    if args.plot:
        plot(rows, slope, intercept, args.plot)


if __name__ == "__main__":
    main()
