"""Hostile input and faults: poison objects, S3 faults over many batches, readers during a reduce.

    python -m benchmarks.hostile poison [--actions 20000]
    python -m benchmarks.hostile faults [--rounds 10 --actions 5000 --fault-rate 0.15]
    python -m benchmarks.hostile readers [--actions 60000 --places 5000] [--compare-ref 6b184f7]

Each runs the pipeline through local_stack.harness.run_batch, each job its own process, on
the local moto S3 and embedded PostgreSQL.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import psycopg

from benchmarks import report
from benchmarks.services import REPO, Services, running
from local_stack.harness import RunResult, run_batch
from local_stack.sample_data import CATEGORIES, Expected, SampleFile, generate

MIB = 1 << 20

# ---------------------------------------------------------------------------------------------
# poison: hostile objects against one shard


POISON = """Hostile input against one shard: memory stays bounded, poison is quarantined, the rest is exact.

One child reads normal sample files plus three poison objects, as a single shard, then the
reduce applies the batch:
  * 256 MB of `{},{},...` gzipped to a few hundred KB (85 million empty records);
  * 300 MB of whitespace gzipped (past the 256 MB inflation cap);
  * a 2 GB plain object (past the 64 MB listed-size cap: never fetched).
Printed: the child's peak RSS (its own VmHWM), seconds, what the ledger says of each poison
file, and whether the totals of the other files equal the generator's; exits 1 if not.
"""
PARTITION = "user-actions/year=2025/month=01/day=15/hour=13/"
POISON_KEYS = {
    "empty records, 256 MB inflated": f"{PARTITION}batch-1736949600000-0-poison01.json",
    "whitespace, 300 MB inflated": f"{PARTITION}batch-1736949600001-0-poison02.json",
    "plain object, 2 GB listed": f"{PARTITION}batch-1736949600002-0-poison03.json",
}


def _gzip_stream(piece: bytes, total: int, head: bytes = b"", tail: bytes = b"") -> bytes:
    """gzip of head + piece * n + tail (about `total` bytes) without holding the inflated bytes."""
    deflater = zlib.compressobj(6, zlib.DEFLATED, 31)
    out = [deflater.compress(head)]
    block = piece * (MIB // len(piece))
    for _ in range(total // len(block)):
        out.append(deflater.compress(block))
    out += [deflater.compress(tail), deflater.flush()]
    return b"".join(out)


def _put_poison(services: Services, bucket: str) -> None:
    bodies = {
        "empty records, 256 MB inflated": _gzip_stream(b"{},", 256 * MIB, b"[", b"{}]"),
        "whitespace, 300 MB inflated": _gzip_stream(b" ", 300 * MIB, b"[", b"]"),
    }
    for name, body in bodies.items():
        services.client.put_object(Bucket=bucket, Key=POISON_KEYS[name], Body=body, ContentEncoding="gzip")
    with tempfile.TemporaryDirectory() as tmp:
        big = Path(tmp) / "two-gb.json"
        with big.open("wb") as handle:  # sparse: 2 GB listed, nothing written
            handle.truncate(2 * 1024 * MIB)
        services.client.upload_file(str(big), bucket, POISON_KEYS["plain object, 2 GB listed"])


def _ledger_and_totals(url: str) -> tuple[dict[str, str], tuple[int, int]]:
    """What the ledger says of each poison key, and the database's (actions, users)."""
    with psycopg.connect(url) as conn:
        ledger = dict(
            conn.execute(
                "SELECT key, status || ': ' || reason FROM processed_files WHERE key = ANY(%s)",
                (list(POISON_KEYS.values()),),
            ).fetchall()
        )
        actions, users = conn.execute("SELECT sum(total_actions), count(*) FROM user_behavior_vectors").fetchone()
    return ledger, (int(actions or 0), int(users))


def poison(args: argparse.Namespace) -> None:
    sample = generate(actions=args.actions, users=2_000, places=500, seed=5, malformed_files=0)
    with running() as services:
        bucket = services.bucket(f"poison-{uuid.uuid4().hex[:8]}", sample.files)
        _put_poison(services, bucket)
        env = services.env(bucket, DATABASE_URL=services.database(), BATCH_ID=f"poison-{uuid.uuid4().hex[:8]}")
        result = run_batch(env, shards=1, processes=True)
        ledger, totals = _ledger_and_totals(env["DATABASE_URL"])
    stats = result.report["stats"] if result.report else {}
    exact = totals == (sample.expected.actions, len(sample.expected.users))
    print(f"one shard: {len(sample.files)} normal files ({sample.expected.actions:,} actions) + 3 poison objects")
    print(f"child: {result.seconds['shards']:.1f} s wall, peak RSS {stats['shard_peak_rss_mb']:.0f} MiB (VmHWM)")
    report.table(["poison object", "ledger"], [[name, ledger.get(key, "MISSING")] for name, key in POISON_KEYS.items()])
    print(
        f"other files: totals {totals[0]:,} actions over {totals[1]:,} users; generator {sample.expected.actions:,} "
        f"over {len(sample.expected.users):,}: {'exact' if exact else 'NOT EXACT'}"
    )
    print(f"report: files {stats['files']}, quarantined {stats['files_quarantined']}")
    numbers = {"shard peak RSS": {"MiB": stats["shard_peak_rss_mb"], "limit": 1024.0}}
    report.write_bars(args.figures, "poison", "one shard against poison objects", "MiB", numbers)
    if not exact or stats["shard_peak_rss_mb"] >= 1024 or len(ledger) != len(POISON_KEYS):
        sys.exit(1)


# ---------------------------------------------------------------------------------------------
# faults: many batches through the S3 fault proxy


FAULTS = """Soak: many batches in a row through the S3 fault proxy; the totals must stay exact after every one.

The long variant of tests/test_faults.py: each round uploads new files, then plans, runs the
shard children (up to 3 attempts each, as the job definition) and the reduce through
local_stack.fault_proxy, which answers a share of S3 requests with 503 SlowDown / 500, then
compares the database with the generator's cumulative totals. Exits 1 if a round is not exact.
"""


def mismatches(url: str, expected: Expected) -> int:
    with psycopg.connect(url) as conn:
        rows = dict(conn.execute("SELECT user_id, total_actions FROM user_behavior_vectors").fetchall())
    want = {uid: int(e["click"] + e["like"] + e["bookmark"] + e["other"]) for uid, e in expected.users.items()}
    return sum(1 for uid in set(rows) | set(want) if rows.get(uid) != want.get(uid))


def _faulty_round(env: dict[str, str], shards: int) -> tuple[bool, int]:
    """One batch through the proxy: whether every job succeeded, and the children's attempts."""
    try:
        result = run_batch(env, shards=shards, processes=True, parallel=shards, attempts=3)
    except RuntimeError as error:
        report.progress(f"  {env['BATCH_ID']} failed: {str(error)[-300:]}")
        return False, 0
    return True, sum(result.array.attempts.values()) if result.array else 0


def faults(args: argparse.Namespace) -> None:
    from local_stack.fault_proxy import FaultProxy

    expected, failures, seconds = Expected(), 0, []
    with running() as services, FaultProxy.running(services.moto.endpoint, fault_rate=args.fault_rate) as proxy:
        url = services.database()
        for round_no in range(args.rounds):
            start = datetime(2025, 1, 1, tzinfo=UTC) + timedelta(days=round_no)
            sample = generate(actions=args.actions, users=500, places=200, seed=1000 + round_no, start=start)
            services.bucket("soak", sample.files)
            expected = expected.merge(sample.expected)
            env = services.env("soak", AWS_ENDPOINT_URL=proxy.url, DATABASE_URL=url, BATCH_ID=f"soak-{round_no}")
            started = time.perf_counter()
            succeeded, attempts = _faulty_round(env, args.shards)
            seconds.append(time.perf_counter() - started)
            bad = mismatches(url, expected)
            failures += not (succeeded and bad == 0)
            print(
                f"round {round_no + 1}/{args.rounds}: {seconds[-1]:.1f}s, faults injected so far {proxy.injected}, "
                f"child attempts {attempts}, users off {bad}: {'exact' if succeeded and not bad else 'NOT EXACT'}",
                flush=True,
            )
    print(f"{args.rounds} rounds, {proxy.injected} S3 faults injected, {failures} rounds not exact")
    numbers = {f"round {i + 1}": {"seconds": s} for i, s in enumerate(seconds)}
    report.write_bars(args.figures, "faults", f"batches through {args.fault_rate:.0%} S3 faults", "s", numbers)
    sys.exit(1 if failures else 0)


# ---------------------------------------------------------------------------------------------
# readers: the main server's nearest-place queries during a reduce


READERS = """What the main server's readers feel while a reduce runs: the 10 nearest places every 50 ms.

Day 1 loads every place; day 2 touches every place again; a reader on its own connection asks
for the 10 places nearest a fixed vector (the HNSW index) every 50 ms while day 2's reduce
runs, and records each query's latency. The same is done, in the same run, with the code of an
earlier commit (--compare-ref, default 6b184f7, whose reduce dropped and rebuilt the HNSW index
inside its transaction once a batch touched more than 15% of places), extracted into .cache/
with `git archive` and run with its own command lines.
"""
NEAREST = (
    "SELECT place_id FROM place_vectors ORDER BY content_vector <=> "
    "(SELECT content_vector FROM place_vectors ORDER BY id LIMIT 1) LIMIT 10"
)


class Reader:
    """Asks for the 10 nearest places every 50 ms on its own connection, from start() to stop()."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.latencies: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self._stop.is_set():
                started = time.perf_counter()
                conn.execute(NEAREST).fetchall()
                self.latencies.append(time.perf_counter() - started)
                self._stop.wait(0.05)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def every_place(places: int, prefix: str) -> SampleFile:
    """One click on every place, so the day touches all of them."""
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


def extracted(ref: str) -> Path:
    """The code of `ref` in .cache/compare-<ref>, from git's objects (no worktree, no checkout)."""
    tree = REPO / ".cache" / f"compare-{ref}"
    if not tree.exists():
        tree.mkdir(parents=True)
        archive = subprocess.run(["git", "-C", str(REPO), "archive", ref], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree


def _old_code(tree: Path, module: str, env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", module, *args],
        env={**os.environ, **env, "PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
        cwd=tree,
    )
    if done.returncode != 0:
        raise SystemExit(f"{module} {args} failed in {tree}: {done.stderr[-2000:]}")
    return done.stdout


def _old_code_day(tree: Path, env: dict[str, str], reader: Reader | None) -> float:
    """The earlier commit's plan, shard and reduce (its own command lines); the reduce's seconds."""
    shards = orjson.loads(_old_code(tree, "shard_job", env, "plan", "--shards", "1"))["shards"]
    for index in range(shards):
        _old_code(tree, "shard_job", {**env, "AWS_BATCH_JOB_ARRAY_INDEX": str(index)})
    if reader is not None:
        reader.start()
    started = time.monotonic()
    _old_code(tree, "reduce_job", env)
    return time.monotonic() - started


def _our_day(env: dict[str, str], reader: Reader | None) -> float:
    """Our pipeline through the harness, the reader started once the last shard is done; the reduce's seconds."""

    def on_progress(done: int, shards: int) -> None:
        if reader is not None and done == shards:
            reader.start()

    result: RunResult = run_batch(env, shards=1, processes=True, on_progress=on_progress)
    return result.seconds["reduce"]


def _two_days(services: Services, args: argparse.Namespace, tree: Path | None) -> tuple[float, list[float]]:
    """Day 1, then day 2 with the reader on; the reduce's seconds and the reader's latencies."""
    bucket = services.bucket(f"reader-{uuid.uuid4().hex[:8]}")
    env = services.env(bucket, DATABASE_URL=services.database())
    reader = Reader(env["DATABASE_URL"])
    seconds = 0.0
    for seed, start, prefix in ((1, None, "user-actions/"), (2, datetime(2025, 1, 17, 9, tzinfo=UTC), None)):
        sample = generate(
            actions=args.actions, users=5_000, places=args.places, seed=seed, malformed_files=0, start=start
        )
        touch = every_place(args.places, prefix or "user-actions/year=2025/month=01/day=17/")
        services.bucket(bucket, [*sample.files, touch])
        day = {**env, "BATCH_ID": f"day{seed}-{uuid.uuid4().hex[:6]}"}
        on = reader if seed == 2 else None
        seconds = _our_day(day, on) if tree is None else _old_code_day(tree, day, on)
    reader.stop()
    return seconds, reader.latencies


def _latency_cells(latencies: list[float]) -> list[str]:
    ms = sorted(x * 1000 for x in latencies)
    p99 = ms[min(len(ms) - 1, int(0.99 * len(ms)))]
    return [f"{len(ms)}", f"{statistics.median(ms):.1f}", f"{p99:.1f}", f"{ms[-1]:.1f}"]


def readers(args: argparse.Namespace) -> None:
    old = extracted(args.compare_ref)
    with running() as services:
        results = {
            "ours (index kept row by row, no table lock)": _two_days(services, args, None),
            f"{args.compare_ref} (index dropped and rebuilt in the transaction)": _two_days(services, args, old),
        }
    print(f"reader: 10 nearest of {args.places:,} places every 50 ms during a reduce touching every place")
    rows = [[name, f"{seconds:.1f}", *_latency_cells(waits)] for name, (seconds, waits) in results.items()]
    report.table(["contender", "reduce s", "queries", "p50 ms", "p99 ms", "max ms"], rows)
    numbers = {
        name: {"p99 ms": float(row[4]), "max ms": float(row[5])} for name, row in zip(results, rows, strict=True)
    }
    report.write_bars(args.figures, "readers", "nearest-place queries during a reduce", "ms", numbers)


# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser, sub = report.parser(__spec__.name, __doc__)
    run = report.command(sub, "poison", POISON, poison)
    run.add_argument("--actions", type=int, default=20_000, help="actions in the normal files")
    run = report.command(sub, "faults", FAULTS, faults)
    run.add_argument("--rounds", type=int, default=10, help="batches in a row on one database")
    run.add_argument("--actions", type=int, default=5_000, help="actions per batch")
    run.add_argument("--shards", type=int, default=2, help="shards per batch, all at once")
    run.add_argument("--fault-rate", type=float, default=0.15, help="share of S3 requests answered 503 or 500")
    run = report.command(sub, "readers", READERS, readers)
    run.add_argument("--actions", type=int, default=60_000, help="actions a day")
    run.add_argument("--places", type=int, default=5_000, help="places, every one touched each day")
    run.add_argument("--compare-ref", default="6b184f7", help="the earlier commit to run against")
    report.run(parser, argv)


if __name__ == "__main__":
    main()
