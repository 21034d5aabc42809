"""The planner against a long history: time and memory follow the new hours, not all history.

The input is `--hours` hour partitions of `--files-per-hour` batch files each; all but the last
`--new-hours` are in the ledger (processed_files, on the embedded PostgreSQL) and the planner's
watermark sits where the last plan left it. `python -m shard_job plan --dry-run` then runs as a
separate process, twice per history size: with `--full` (the listing every plan did before) and
incremental (the default); both find the same new files, and a dry run stops before claiming,
so the two differ only in what they list. The keys are served by a small ListObjectsV2
responder over HTTP (moto cannot hold a million objects on this machine in reasonable time).

Printed per history size: keys listed, seconds, the planner's peak RSS (its own VmHWM), files
planned, and the full/incremental ratio, so the two history sizes show what grows with history.

    python -m benchmarks.planner_bench [--sizes 250000,1000000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse
from xml.sax.saxutils import escape

import orjson
import psycopg

from coordinator.listing import hour_prefix
from local_stack.moto_s3 import free_port
from local_stack.postgres import LocalPostgres
from witple_batch.run_state import FileStatus

REPO = Path(__file__).resolve().parents[1]
BUCKET, PREFIX = "history", "user-actions/"
PAGE = 1000


class History:
    """Keys of `hours` hour partitions ending at the current hour, computed, never stored."""

    def __init__(self, hours: int, per_hour: int) -> None:
        self.per_hour = per_hour
        newest = datetime.now(UTC).replace(minute=0, second=0, microsecond=0, tzinfo=None)
        self.hours = [newest - timedelta(hours=h) for h in range(hours - 1, -1, -1)]
        self.index = {hour_prefix(PREFIX, h): i for i, h in enumerate(self.hours)}

    def key(self, hour_index: int, n: int) -> str:
        hour = self.hours[hour_index]
        ms = int(hour.replace(tzinfo=UTC).timestamp() * 1000) + n
        return f"{hour_prefix(PREFIX, hour)}batch-{ms}-100-{hour_index:05x}{n:03x}.json"

    def keys(self, prefix: str, start: int) -> tuple[list[str], bool]:
        """One page of keys under `prefix` from position `start`; whether more follow."""
        if prefix in self.index:
            first, last = self.index[prefix], self.index[prefix] + 1
        elif PREFIX.startswith(prefix) or prefix == PREFIX:
            first, last = 0, len(self.hours)
        else:
            return [], False
        total = (last - first) * self.per_hour
        stop = min(start + PAGE, total)
        page = [self.key(first + i // self.per_hour, i % self.per_hour) for i in range(start, stop)]
        return page, stop < total


def responder(history: History) -> type[BaseHTTPRequestHandler]:
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
            prefix = query.get("prefix", [""])[0]
            start = int(query.get("continuation-token", ["0"])[0])
            keys, more = history.keys(prefix, start)
            contents = "".join(
                f"<Contents><Key>{escape(k)}</Key><Size>4096</Size><ETag>&quot;e{i}&quot;</ETag>"
                "<LastModified>2025-01-01T00:00:00.000Z</LastModified><StorageClass>STANDARD</StorageClass></Contents>"
                for i, k in enumerate(keys)
            )
            token = f"<NextContinuationToken>{start + len(keys)}</NextContinuationToken>" if more else ""
            body = (
                '<?xml version="1.0" encoding="UTF-8"?><ListBucketResult>'
                f"<Name>{BUCKET}</Name><Prefix>{escape(prefix)}</Prefix><KeyCount>{len(keys)}</KeyCount>"
                f"<MaxKeys>{PAGE}</MaxKeys><IsTruncated>{'true' if more else 'false'}</IsTruncated>"
                f"{token}{contents}</ListBucketResult>"
            ).encode()
            self._reply(200, body)

        def do_PUT(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            self._reply(200, etag="0")

        def do_DELETE(self) -> None:
            self._reply(204)

    return Handler


def fill_ledger(url: str, history: History, new_hours: int) -> None:
    """Every file but those of the newest hours processed; the watermark where that plan left it."""
    old = len(history.hours) - new_hours
    subprocess.run(
        [sys.executable, "-m", "reduce_job", "migrate"],
        env={**os.environ, "DATABASE_URL": url},
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    with psycopg.connect(url, autocommit=True) as conn:
        with conn.cursor().copy("COPY processed_files (key, etag, size, batch_id, status) FROM STDIN") as copy:
            for h in range(old):
                for n in range(history.per_hour):
                    copy.write_row((history.key(h, n), f"e{n}", 4096, "earlier", FileStatus.PROCESSED.value))
        conn.execute(
            "INSERT INTO planner_watermarks (source, resume_hour) VALUES (%s, %s)",
            (f"s3://{BUCKET}/{PREFIX}", history.hours[old].replace(tzinfo=UTC)),
        )
        conn.execute("ANALYZE processed_files")


def run_planner(env: dict[str, str], batch_id: str, *args: str) -> dict:
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.planner_bench", "--child", batch_id, *args],
        env={**os.environ, **env},
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"planner failed: {result.stderr[-3000:]}")
    lines = result.stdout.strip().splitlines()
    return {**orjson.loads(lines[-2]), **orjson.loads(lines[-1]), "seconds": seconds}


def child(batch_id: str, args: list[str]) -> None:
    """The planner in this process, then its own peak RSS (VmHWM) on a line of its own."""
    from shard_job.cli import main as shard_main
    from witple_batch.resources import peak_rss_mb

    code = shard_main(["plan", "--batch-id", batch_id, "--shards", "4", *args])
    sys.stdout.write(orjson.dumps({"peak_rss_mb": peak_rss_mb()}).decode() + "\n")
    sys.exit(code)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="250000,1000000", help="listed keys of each history (comma-separated)")
    parser.add_argument("--files-per-hour", type=int, default=100)
    parser.add_argument("--new-hours", type=int, default=100, help="newest hours not yet planned (1%% of 1M)")
    parser.add_argument("--child", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1:])
        return
    rows = []
    with LocalPostgres.running() as pg:
        for size in (int(s) for s in args.sizes.split(",")):
            history = History(size // args.files_per_hour, args.files_per_hour)
            url = pg.new_database()
            fill_ledger(url, history, args.new_hours)
            port = free_port()
            server = ThreadingHTTPServer(("127.0.0.1", port), responder(history))
            threading.Thread(target=server.serve_forever, daemon=True).start()
            env = {
                "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
                "AWS_ACCESS_KEY_ID": "bench",
                "AWS_SECRET_ACCESS_KEY": "bench",
                "AWS_REGION": "us-east-1",
                "S3_BUCKET": BUCKET,
                "S3_PREFIX": PREFIX,
                "WORK_BUCKET": BUCKET,
                "DATABASE_URL": url,
                "LOG_LEVEL": "WARNING",
            }
            for mode, extra in (("full", ("--full", "--dry-run")), ("incremental", ("--dry-run",))):
                measured = run_planner(env, f"bench-{size}-{mode}", *extra)
                rows.append((size, mode, measured))
                print(
                    f"  {size:>9,} keys, {mode:<11}: {measured['seconds']:6.1f} s, peak RSS"
                    f" {measured['peak_rss_mb']:5.0f} MiB, planned {measured['files']:,} files ({measured['listing']})"
                )
            server.shutdown()
    print(f"\n{'history':>12} {'incremental s':>14} {'full s':>8} {'full/incr':>10} {'incr MiB':>9} {'full MiB':>9}")
    for size in sorted({r[0] for r in rows}):
        inc = next(m for s, mode, m in rows if s == size and mode == "incremental")
        full = next(m for s, mode, m in rows if s == size and mode == "full")
        print(
            f"{size:>12,} {inc['seconds']:>14.1f} {full['seconds']:>8.1f} {full['seconds'] / inc['seconds']:>9.1f}x"
            f" {inc['peak_rss_mb']:>9.0f} {full['peak_rss_mb']:>9.0f}"
        )


if __name__ == "__main__":
    main()
