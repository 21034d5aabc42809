"""What the local S3 server costs per GET: moto's stock threaded server against local_stack's.

    .venv/bin/python -m benchmarks.local_s3_bench [--files 765] [--size 31000] [--repeat 5]

Each server runs in its own process, as in a local run (the shards are other processes), and
holds the same files; they are fetched with the shard's own fetcher (16 GETs in flight),
alternately from each server, `--repeat` times. Printed: medians of the wall time, the
server's CPU per GET (from /proc) and the client's, side by side, with the ratios.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from witple_batch.run_layout import InputFile

BUCKET = "local-s3-bench"
SERVERS = ("stock", "ours")


def serve(kind: str) -> None:
    """Run one server until stdin closes, printing its endpoint first."""
    from local_stack.moto_s3 import MotoS3, free_port

    if kind == "stock":
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # as local_stack's: no line per request

        port = free_port()
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        print(f"http://127.0.0.1:{port}", flush=True)
        sys.stdin.read()
        server.stop()
        return
    with MotoS3.start() as moto:
        print(moto.endpoint, flush=True)
        sys.stdin.read()


def server_process(kind: str) -> subprocess.Popen[str]:
    """One server in a process of its own: its endpoint is the first line it prints; it stops when stdin closes."""
    return subprocess.Popen(
        [sys.executable, "-m", "benchmarks.local_s3_bench", "--serve", kind],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def random_body(size: int) -> bytes:
    """`size` bytes of hex text, so nothing compresses them away."""
    return os.urandom(size // 2).hex().encode()


def put_files(client: Any, count: int, body: bytes) -> list[InputFile]:
    """`count` objects holding `body` in BUCKET: the same body gives the same ETags on every server."""
    from witple_batch.run_layout import InputFile

    files = []
    for i in range(count):
        key = f"bench/file-{i:05d}.json"
        etag = client.put_object(Bucket=BUCKET, Key=key, Body=body)["ETag"].strip('"')
        files.append(InputFile(key=key, size=len(body), etag=etag))
    return files


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=765, help="as many as the 50k-action sample has")
    parser.add_argument("--size", type=int, default=31_000, help="bytes per file")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--serve", choices=SERVERS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return

    from local_stack.moto_s3 import MotoS3
    from local_stack.sample_data import ensure_bucket
    from shard_job.fetch import fetch_in_order
    from witple_batch.s3 import s3_client

    servers = {kind: server_process(kind) for kind in SERVERS}
    try:
        clients = {}
        files: list[InputFile] = []
        body = random_body(args.size)
        for kind, process in servers.items():
            assert process.stdout is not None
            os.environ.update(MotoS3(endpoint=process.stdout.readline().strip(), _server=None).client_env())
            clients[kind] = client = s3_client(os.environ["AWS_REGION"])
            ensure_bucket(client, BUCKET, os.environ["AWS_REGION"])
            files = put_files(client, args.files, body)

        runs: dict[str, list[tuple[float, float, float]]] = {kind: [] for kind in SERVERS}
        for _ in range(args.repeat):
            for kind in SERVERS:
                server_before, client_before = cpu_seconds(servers[kind].pid), time.process_time()
                start = time.perf_counter()
                for _item, data in fetch_in_order(clients[kind], BUCKET, files, 16, 64 << 20):
                    assert isinstance(data, bytes)
                wall = time.perf_counter() - start
                server = cpu_seconds(servers[kind].pid) - server_before
                runs[kind].append((wall, server, time.process_time() - client_before))
    finally:
        for process in servers.values():
            process.communicate("")

    def median(kind: str, field: int) -> float:
        return statistics.median(run[field] for run in runs[kind])

    print(f"{args.files} GETs of {args.size:,} B, 16 in flight, medians of {args.repeat}")
    print(f"{'':28}{'moto stock':>12}{'local_stack':>13}{'ratio':>8}")
    rows = (
        ("wall, s", 0, 1.0),
        ("server CPU per GET, ms", 1, 1e3 / args.files),
        ("client CPU per GET, ms", 2, 1e3 / args.files),
    )
    for label, field, scale in rows:
        stock, ours = median("stock", field) * scale, median("ours", field) * scale
        print(f"{label:28}{stock:12.2f}{ours:13.2f}{stock / ours:7.2f}x")


if __name__ == "__main__":
    main()
