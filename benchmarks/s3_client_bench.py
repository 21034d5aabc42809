"""What our S3 client's timestamp parser saves: client CPU per GET and per listed key, against botocore's.

    .venv/bin/python -m benchmarks.s3_client_bench [--files 765] [--size 31000] [--repeat 5]

The local S3 server runs in its own process (`local_s3_bench --serve ours`), so this process's
CPU time is the client's alone. Two clients with the same settings, one on botocore's default
timestamp parser (dateutil) and one as `witple_batch.s3.s3_client` makes them, fetch the same
files with the shard's fetcher (16 GETs in flight) and list them, alternately, `--repeat`
times. Printed: medians of client CPU per GET and per thousand listed keys, side by side.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

import boto3
import botocore.session

from benchmarks.local_s3_bench import BUCKET, put_files, random_body, server_process
from local_stack.moto_s3 import MotoS3
from local_stack.sample_data import ensure_bucket
from shard_job.fetch import fetch_in_order
from witple_batch.s3 import s3_client

CLIENTS = ("botocore's parser", "ours")


def _stock_client(region: str) -> Any:
    """s3_client's settings, botocore's default timestamp parser."""
    ours = s3_client(region)
    session = boto3.session.Session(botocore_session=botocore.session.get_session())
    return session.client("s3", config=ours.meta.config)


def _cpu(run: Any) -> float:
    started = time.process_time()
    run()
    return time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=765, help="as many as the 50k-action sample has")
    parser.add_argument("--size", type=int, default=31_000, help="bytes per file")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    server = server_process("ours")
    try:
        assert server.stdout is not None
        os.environ.update(MotoS3(endpoint=server.stdout.readline().strip(), _server=None).client_env())
        region = os.environ["AWS_REGION"]
        clients = dict(zip(CLIENTS, (_stock_client(region), s3_client(region)), strict=True))
        ensure_bucket(clients["ours"], BUCKET, region)
        files = put_files(clients["ours"], args.files, random_body(args.size))
        gets: dict[str, list[float]] = {name: [] for name in CLIENTS}
        lists: dict[str, list[float]] = {name: [] for name in CLIENTS}
        for _ in range(args.repeat):
            for name, client in clients.items():

                def fetch(client: Any = client) -> None:
                    for _item, data in fetch_in_order(client, BUCKET, files, 16, 64 << 20):
                        assert isinstance(data, bytes)

                def listing(client: Any = client) -> None:
                    for _page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
                        pass

                gets[name].append(_cpu(fetch) * 1e3 / args.files)
                lists[name].append(_cpu(listing) * 1e6 / args.files)
    finally:
        server.communicate("")

    print(f"{args.files} objects of {args.size:,} B, client CPU only, medians of {args.repeat}")
    print(f"{'':30}{CLIENTS[0]:>18}{CLIENTS[1]:>10}{'ratio':>8}")
    for label, runs in (("per GET, ms", gets), ("per 1,000 listed keys, ms", lists)):
        stock, ours = (statistics.median(runs[name]) for name in CLIENTS)
        print(f"{label:30}{stock:18.3f}{ours:10.3f}{stock / ours:7.2f}x")


if __name__ == "__main__":
    main()
