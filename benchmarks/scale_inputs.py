"""The inputs `benchmarks.scale` builds at sizes the sample generator cannot reach: a reduce's synthetic
partials, a long history of keys behind a ListObjectsV2 responder, and the main server's filled tables."""

from __future__ import annotations

import hashlib
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse
from xml.sax.saxutils import escape

import numpy as np
import psycopg

from benchmarks import report
from benchmarks.services import Services
from coordinator.listing import hour_prefix
from coordinator.plan import write_plan
from local_stack import main_server
from local_stack.harness import module
from local_stack.http_server import serving
from shard_job.child import write_partial
from witple_batch import run_state
from witple_batch.partials import ShardPartial
from witple_batch.place_text import PLACE_TEXT_VERSION
from witple_batch.run_layout import InputFile, RunLayout, load_report
from witple_batch.run_state import FileStatus
from witple_batch.schema import migrate
from witple_batch.settings import common_from_env

# ---------------------------------------------------------------------------------------------
# the reduce: synthetic partials in the real format

MODEL = "0" * 64  # the content model every synthetic shard claims
START_US = 1_736_950_000_000_000


def places_for(users: int) -> int:
    """20 k places at 100 k users, growing with the square root of users (200 k at 10 M)."""
    return int(20_000 * (users / 100_000) ** 0.5)


def _content(places: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((places, 384)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _pairs(rng: np.random.Generator, users: int, places: int, pairs: int, user_skew: float) -> tuple[np.ndarray, ...]:
    """Distinct random (user, place) pairs, places Zipf-like, users uniform or, with `user_skew` s > 0, the
    i-th user drawn in proportion to 1 / (i + 1)^s: the users, the places and each pair's indexes."""
    if user_skew > 0:
        weights = 1.0 / np.arange(1, users + 1) ** user_skew
        user = rng.choice(users, size=pairs, p=weights / weights.sum())
    else:
        user = rng.integers(0, users, size=pairs)
    place = (rng.zipf(1.3, size=pairs) - 1) % places
    combined = np.unique(user.astype(np.int64) * places + place)
    user_keys, pair_user = np.unique(combined // places, return_inverse=True)
    place_keys, pair_place = np.unique(combined % places, return_inverse=True)
    return user_keys, place_keys, pair_user, pair_place


def shard_partial(
    rng: np.random.Generator, users: int, vectors: np.ndarray, pairs: int, key: str, user_skew: float = 0.0
) -> ShardPartial:
    """`pairs` random (user, place) pairs of one shard, as the child would have written them."""
    user_keys, place_keys, pair_user, pair_place = _pairs(rng, users, len(vectors), pairs, user_skew)
    k = len(pair_user)
    counts = np.zeros((k, 4), dtype=np.int64)
    counts[:, 0] = rng.integers(1, 4, size=k)
    counts[:, 1] = rng.integers(0, 2, size=k)
    counts[:, 2] = (rng.random(k) < 0.1).astype(np.int64)
    first = START_US + rng.integers(0, 3_600_000_000, size=k)
    hashes = np.stack([np.frombuffer(hashlib.sha256(b"p%d" % p).digest(), np.uint8) for p in place_keys])
    total = int(counts.sum())
    processed = FileStatus.PROCESSED.value
    return ShardPartial(
        user_ids=[f"u{u:09d}" for u in user_keys],
        place_categories=["restaurants"] * len(place_keys),
        place_ids=[f"p{p:07d}" for p in place_keys],
        place_content=vectors[place_keys],
        place_text_sha256=hashes,
        place_catalogue_sha256=hashes,  # a catalogue row each
        pair_user=pair_user.astype(np.int32),
        pair_place=pair_place.astype(np.int32),
        pair_counts=counts,
        pair_first_us=first,
        pair_last_us=first + rng.integers(0, 600_000_000, size=k),
        files=[
            {"key": key, "etag": "e", "size": 1, "status": processed, "records": total, "accepted": total}
            | {"rejected": 0, "envelope_batch_id": key[-12:]}
        ],
        content_model=MODEL,
        place_text_version=PLACE_TEXT_VERSION,
    )


def write_batch(
    env: dict[str, str], users: int, pairs_per_user: int, pairs_per_shard: int, user_skew: float = 0.0, seed: int = 0
) -> tuple[int, int, int]:
    """The run recorded planned, its signed plan and every shard's partial on S3; returns (places, pairs, shards).
    The same `users` give the same places and content vectors; `seed` draws other pairs and names other files."""
    from witple_batch.s3 import s3_client

    config = common_from_env(env)
    client = s3_client(config.region)
    places = places_for(users)
    vectors = _content(places, seed=users)
    total = users * pairs_per_user
    shards = max(2, -(-total // pairs_per_shard))
    files = [[InputFile(f"user-actions/batch-{seed}-{i:05d}.json", 1, "e")] for i in range(shards)]
    with psycopg.connect(env["DATABASE_URL"], autocommit=True) as conn:
        migrate(conn)
        run_state.record_planned(conn, env["BATCH_ID"], 7200, {})
    write_plan(client, config, env["BATCH_ID"], files, [], None)
    layout = RunLayout(config.work_bucket, config.work_prefix, env["BATCH_ID"])
    written = 0
    rng = np.random.default_rng([users, seed] if seed else users)  # seed 0: the draws `scale reduce` measured
    with tempfile.TemporaryDirectory() as scratch:
        rejects = Path(scratch) / "rejects.jsonl.gz"
        rejects.write_bytes(b"")
        for index in range(shards):
            partial = shard_partial(rng, users, vectors, total // shards, files[index][0].key, user_skew)
            written += len(partial.pair_user)
            metrics = {"peak_rss_mb": 0.0, "seconds": {}}
            write_partial(client, layout, index, partial, rejects, metrics, config.partials_key)
    return places, written, shards


def apply_batch(services: Services, env: dict[str, str]) -> dict[str, Any]:
    """`python -m reduce_job` on the batch write_batch wrote: its report."""
    done = module("reduce_job", env)
    if done.returncode != 0:
        raise SystemExit(f"reduce failed: {done.stderr[-3000:]}")
    config = common_from_env(env)
    return load_report(services.client, RunLayout(config.work_bucket, config.work_prefix, env["BATCH_ID"]))


def batch_env(services: Services, batch_id: str) -> dict[str, str]:
    """A synthetic batch's reduce environment: a fresh work bucket and database, quiet logs, long statements."""
    work = services.bucket(f"work-{uuid.uuid4().hex[:8]}")
    env = services.env("input", WORK_BUCKET=work, DATABASE_URL=services.database(), BATCH_ID=batch_id)
    return env | {"LOG_LEVEL": "WARNING", "DB_STATEMENT_TIMEOUT_SECONDS": "7200"}


def reduce_batch(services: Services, users: int, pairs_per_user: int, pairs_per_shard: int) -> dict[str, Any]:
    """A synthetic batch of `users` written and `python -m reduce_job` run on it: its size, seconds and report."""
    env = batch_env(services, f"scale-{users}")
    started = time.perf_counter()
    places, pairs, shards = write_batch(env, users, pairs_per_user, pairs_per_shard)
    report.progress(
        f"  {users:,} users: {shards} shards, {pairs:,} pairs written in {time.perf_counter() - started:.0f} s"
    )
    started = time.perf_counter()
    got = apply_batch(services, env)
    seconds = time.perf_counter() - started
    stages = ", ".join(f"{k} {v:.0f}" for k, v in got["seconds"].items())
    peak = got["stats"]["reduce_peak_rss_mb"]
    report.progress(f"  {users:,} users: reduce {seconds:.0f} s ({stages}), peak RSS {peak:.0f} MiB")
    return {"users": got["stats"]["users"], "places": places, "pairs": pairs, "shards": shards} | {
        "seconds": seconds,
        "peak_mb": peak,
        "stages": stages,
    }


# ---------------------------------------------------------------------------------------------
# the planner: a long history of keys, and its ledger

HISTORY_BUCKET, HISTORY_PREFIX = "history", "user-actions/"
PAGE = 1000


class History:
    """Keys of `hours` hour partitions ending at the current hour, computed, never stored."""

    def __init__(self, hours: int, per_hour: int) -> None:
        self.per_hour = per_hour
        newest = datetime.now(UTC).replace(minute=0, second=0, microsecond=0, tzinfo=None)
        self.hours = [newest - timedelta(hours=h) for h in range(hours - 1, -1, -1)]
        self.index = {hour_prefix(HISTORY_PREFIX, h): i for i, h in enumerate(self.hours)}

    def key(self, hour_index: int, n: int) -> str:
        hour = self.hours[hour_index]
        ms = int(hour.replace(tzinfo=UTC).timestamp() * 1000) + n
        return f"{hour_prefix(HISTORY_PREFIX, hour)}batch-{ms}-100-{hour_index:05x}{n:03x}.json"

    def keys(self, prefix: str, start: int) -> tuple[list[str], bool]:
        """One page of keys under `prefix` from position `start`; whether more follow."""
        if prefix in self.index:
            first, last = self.index[prefix], self.index[prefix] + 1
        elif HISTORY_PREFIX.startswith(prefix):
            first, last = 0, len(self.hours)
        else:
            return [], False
        total = (last - first) * self.per_hour
        stop = min(start + PAGE, total)
        page = [self.key(first + i // self.per_hour, i % self.per_hour) for i in range(start, stop)]
        return page, stop < total

    def listing(self, query: dict[str, list[str]]) -> bytes:
        """The ListObjectsV2 answer to `query`."""
        prefix = query.get("prefix", [""])[0]
        start = int(query.get("continuation-token", ["0"])[0])
        keys, more = self.keys(prefix, start)
        contents = "".join(
            f"<Contents><Key>{escape(k)}</Key><Size>4096</Size><ETag>&quot;e{i}&quot;</ETag>"
            "<LastModified>2025-01-01T00:00:00.000Z</LastModified><StorageClass>STANDARD</StorageClass></Contents>"
            for i, k in enumerate(keys)
        )
        token = f"<NextContinuationToken>{start + len(keys)}</NextContinuationToken>" if more else ""
        return (
            '<?xml version="1.0" encoding="UTF-8"?><ListBucketResult>'
            f"<Name>{HISTORY_BUCKET}</Name><Prefix>{escape(prefix)}</Prefix><KeyCount>{len(keys)}</KeyCount>"
            f"<MaxKeys>{PAGE}</MaxKeys><IsTruncated>{'true' if more else 'false'}</IsTruncated>"
            f"{token}{contents}</ListBucketResult>"
        ).encode()


def _responder(history: History) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_args: object) -> None:
            pass

        def _reply(self, status: int, body: bytes = b"", etag: str | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            if etag:
                self.send_header("ETag", f'"{etag}"')
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            query = parse_qs(urlparse(self.path).query)
            if "list-type" not in query:
                self._reply(404, b"<Error><Code>NoSuchKey</Code><Message>none</Message></Error>")
                return
            self._reply(200, history.listing(query))

        def do_PUT(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            self._reply(200, etag="0")

        def do_DELETE(self) -> None:
            self._reply(204)

    return Handler


@contextmanager
def history_responder(hours: int, per_hour: int) -> Iterator[tuple[History, dict[str, str]]]:
    """A history served over HTTP as S3 would list it, and the environment that points a planner at it."""
    history = History(hours, per_hour)
    with serving(_responder(history)) as port:
        yield (
            history,
            {
                "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
                "AWS_ACCESS_KEY_ID": "bench",
                "AWS_SECRET_ACCESS_KEY": "bench",
                "AWS_REGION": "us-east-1",
                "S3_BUCKET": HISTORY_BUCKET,
                "S3_PREFIX": HISTORY_PREFIX,
                "WORK_BUCKET": HISTORY_BUCKET,
                "LOG_LEVEL": "WARNING",
            },
        )


def fill_ledger(url: str, history: History, new_hours: int) -> None:
    """Every file but those of the newest hours processed; the watermark where that plan left it."""
    old = len(history.hours) - new_hours
    with psycopg.connect(url, autocommit=True) as conn:
        migrate(conn)
        with conn.cursor().copy("COPY processed_files (key, etag, size, batch_id, status) FROM STDIN") as copy:
            for h in range(old):
                for n in range(history.per_hour):
                    copy.write_row((history.key(h, n), f"e{n}", 4096, "earlier", FileStatus.PROCESSED.value))
        conn.execute(
            "INSERT INTO planner_watermarks (source, resume_hour) VALUES (%s, %s)",
            (f"s3://{HISTORY_BUCKET}/{HISTORY_PREFIX}", history.hours[old].replace(tzinfo=UTC)),
        )
        conn.execute("ANALYZE processed_files")


# ---------------------------------------------------------------------------------------------
# adopt: the main server's tables, filled

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


def fill_main_server(url: str, rows: int) -> float:
    """The main server's schema with `rows` users and place rows (1% of places duplicated); returns seconds."""
    started = time.perf_counter()
    main_server.create(url)
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in FILL.split(";\n"):
            if statement.strip():
                conn.execute(statement, {"n": rows, "places": rows * 99 // 100})
        conn.execute("ANALYZE")
    return time.perf_counter() - started


def _read_like_the_main_server(url: str, stop: threading.Event, waits: list[float]) -> None:
    """The main server's reads, one every 50 ms; each one's latency."""
    with psycopg.connect(url, autocommit=True) as conn:
        while not stop.is_set():
            started = time.perf_counter()
            conn.execute("SELECT behavior_vector::text FROM user_behavior_vectors WHERE user_id = 'user-7'").fetchall()
            conn.execute("SELECT count(*) FROM place_vectors WHERE place_category = 'restaurants'").fetchall()
            waits.append(time.perf_counter() - started)
            time.sleep(0.05)


def _migrate(url: str, *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.perf_counter()
    done = module("reduce_job", {"DATABASE_URL": url, "DB_STATEMENT_TIMEOUT_SECONDS": "3600"}, "migrate", *args)
    if done.returncode != 0:
        raise SystemExit(f"migrate {' '.join(args)} failed: {done.stderr[-2000:]}")
    return done, time.perf_counter() - started


def migrate_while_reading(url: str) -> tuple[str, float, float, list[float]]:
    """The dry run's plan and seconds, then the migration's seconds with a reader's waits around it."""
    planned, dry_seconds = _migrate(url, "--dry-run")
    stop, waits = threading.Event(), []
    thread = threading.Thread(target=_read_like_the_main_server, args=(url, stop, waits))
    thread.start()
    time.sleep(0.5)
    try:
        _, seconds = _migrate(url)
        time.sleep(0.5)
    finally:
        stop.set()
        thread.join()
    return planned.stdout, dry_seconds, seconds, waits
