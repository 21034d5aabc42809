"""One array child on one shard of generated data, on a local moto S3 server: throughput and peak RSS.

    .venv/bin/python benchmarks/shard_bench.py [--actions 100000] [--files-target 1000]

The child runs as its own process, exactly as Batch starts it; its figures come from the
metrics.json it writes (peak RSS is the child's own VmHWM). Then the same files are
fetched again with the child's fetcher (its GET process) and nothing else, to show how much
of the read stage is the GETs rather than our parsing and validation.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import orjson

from local_stack.moto_s3 import MotoS3
from local_stack.sample_data import ensure_bucket, generate, upload
from shard_job.fetch_process import FetchProcess
from witple_batch.partials import METRICS_FILE
from witple_batch.run_layout import RunLayout, load_shard_plan
from witple_batch.s3 import s3_client
from witple_batch.settings import DEFAULT_WORK_PREFIX, common_from_env

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--actions", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--places", type=int, default=5_000)
    parser.add_argument("--files-target", type=int, default=1_000, help="about this many files")
    args = parser.parse_args()

    batch_size = max(1, args.actions // args.files_target)
    sample = generate(
        actions=args.actions, users=args.users, places=args.places, batch_size=batch_size, single_rate=0.0
    )
    with MotoS3.start() as moto:
        env = {
            **os.environ,
            **moto.client_env(),
            "S3_BUCKET": "bench-input",
            "BATCH_ID": "shard-bench",
            "MODEL_DIR": os.environ.get("MODEL_DIR", str(REPO / ".cache" / "model")),
        }
        os.environ.update(moto.client_env())
        client = s3_client(env["AWS_REGION"])
        ensure_bucket(client, "bench-input", env["AWS_REGION"])
        upload(client, "bench-input", sample.files)
        plan = subprocess.run(
            [sys.executable, "-m", "shard_job", "plan", "--shards", "1", "--no-ledger"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "shard_job"], env=env, capture_output=True, check=True)
        wall = time.perf_counter() - started
        layout = RunLayout("bench-input", DEFAULT_WORK_PREFIX, "shard-bench")
        metrics_key = layout.shard_prefix(0) + METRICS_FILE
        metrics = orjson.loads(client.get_object(Bucket=layout.work_bucket, Key=metrics_key)["Body"].read())
        files = list(load_shard_plan(client, layout, 0, common_from_env(env).partials_key).files)
        with FetchProcess.started() as reader:
            time.sleep(1.0)  # its imports done: the GETs alone are timed
            started = time.perf_counter()
            for _ in reader.fetch_in_order(env["AWS_REGION"], "bench-input", files, 16, 128 << 20):
                pass
            gets_alone = time.perf_counter() - started
    seconds = metrics["seconds"]
    work = sum(seconds.values())
    print(f"plan: {plan.stdout.strip()}")
    print(
        f"files {metrics['files']:,}  actions {metrics['records_read']:,}  users {metrics['users']:,}  "
        f"places {metrics['places']:,}  texts embedded {metrics['texts_embedded']:,}"
    )
    print(f"process wall {wall:.2f}s (imports and model load included), stages {work:.2f}s")
    for stage, value in seconds.items():
        print(f"  {stage:<14}{value:>8.2f}s")
    print(
        f"files/s {metrics['files'] / wall:,.0f}   actions/s {metrics['records_read'] / wall:,.0f}   "
        f"texts/s (embed stage) {metrics['texts_embedded'] / seconds['embed']:,.0f}"
    )
    print(
        f"GETs alone (the child's GET process, 16 at once, no parsing): {gets_alone:.2f}s = "
        f"{metrics['files'] / gets_alone:,.0f} files/s; the read stage is {seconds['read'] / gets_alone:.2f}x that"
    )
    print(f"peak RSS {metrics['peak_rss_mb']:.0f} MiB (limit in the acceptance: 1024 MiB)")


if __name__ == "__main__":
    main()
