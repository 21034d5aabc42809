"""A shard's memory against MAX_ACTIONS_PER_SHARD: files whose names say 0 actions, ids all new.

The planner sizes runs by the action counts in file names and shards by listed bytes; neither
bounds what a shard holds when a producer understates its counts or gzip inflates. The child's
own cap does: past MAX_ACTIONS_PER_SHARD accepted actions, the rest of its files wait for the
next plan. Each row below reads the same stream of files (10,000 actions each, named
`batch-<ms>-0-<id>.json`) into one shard, in a fresh process, through the child's reading and
aggregation (shard_job/read_shard.py, witple_batch/aggregate.py), and prints its peak resident
memory above the process's size before the first file (VmHWM):

  * hostile ids: every action a new user id and a new place id, 256 characters each;
  * repeated ids: 4,000 users and 2,000 places, as an hourly batch.

"no cap" is the child before the cap (a cap above the input). Within one run, the peak should
follow the cap, not the input.

    python -m benchmarks.shard_cap_bench [--files 60] [--caps 150000,300000]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

from shard_job.read_shard import RejectsFile, ShardInput, add_file
from witple_batch.aggregate import aggregate
from witple_batch.input_files import InputLimits
from witple_batch.resources import peak_rss_mb
from witple_batch.run_layout import InputFile

PER_FILE = 10_000
MIB = 1 << 20
LIMITS = InputLimits(
    max_object_bytes=64 * MIB, max_decompressed_bytes=256 * MIB, max_records=100_000, max_record_bytes=64 * 1024
)
PLANNED_US = 1_737_000_000_000_000
ID_CHARS = 256


def _body(index: int, hostile: bool) -> bytes:
    actions = []
    for i in range(index * PER_FILE, (index + 1) * PER_FILE):
        if hostile:
            user, place = f"{i:0{ID_CHARS}d}", f"p{i:0{ID_CHARS - 1}d}"
        else:
            user, place = f"user-{i % 4_000}", f"{i % 2_000}"
        actions.append({"user_id": user, "place_id": place, "place_category": "nature", "action_type": "click"})
    return orjson.dumps({"actions": actions})


def one(files: int, cap: int, hostile: bool) -> dict[str, float]:
    """One shard's read and aggregation, in this process: its peak above the start, and counts."""
    with tempfile.TemporaryDirectory() as tmp, RejectsFile(Path(tmp) / "rejects.jsonl.gz") as rejects:
        shard = ShardInput(rejects=rejects, max_actions=cap)
        before = peak_rss_mb()
        started = time.perf_counter()
        for index in range(files):
            body = _body(index, hostile)
            add_file(shard, InputFile(f"batch-{index}-0-{index:08d}.json", len(body), "e"), body, LIMITS, PLANNED_US)
            del body
        pairs = len(aggregate(shard.columns).pair_user)
        return {
            "accepted": shard.records_accepted,
            "deferred": shard.files_deferred,
            "pairs": pairs,
            "seconds": time.perf_counter() - started,
            "peak_mb": peak_rss_mb() - before,
        }


def _in_process(files: int, cap: int, hostile: bool) -> dict[str, float]:
    """one() in a fresh process, so each row's peak is its own."""
    argv = [sys.executable, "-m", "benchmarks.shard_cap_bench", "--one", f"{files},{cap},{int(hostile)}"]
    out = subprocess.run(argv, check=True, capture_output=True, text=True)
    return orjson.loads(out.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=60, help=f"files of {PER_FILE:,} actions")
    parser.add_argument("--caps", default="150000,300000", help="MAX_ACTIONS_PER_SHARD values, comma-separated")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # files,cap,hostile: one row, in this process
    args = parser.parse_args()
    if args.one:
        files, cap, hostile = (int(v) for v in args.one.split(","))
        print(orjson.dumps(one(files, cap, bool(hostile))).decode())
        return
    caps = [int(c) for c in args.caps.split(",")]
    total = args.files * PER_FILE
    print(f"input: {args.files} files, {total:,} actions, every name claiming 0 actions")
    print(f"{'ids':<10} {'cap':>12} {'accepted':>10} {'deferred files':>15} {'peak MiB':>9} {'B/action':>9} {'s':>6}")
    for hostile in (True, False):
        rows = []
        for cap in [*caps, total * 10]:
            got = _in_process(args.files, cap, hostile)
            rows.append(got)
            label = "no cap" if cap >= total * 10 else f"{cap:,}"
            per_action = got["peak_mb"] * MIB / max(got["accepted"], 1)
            print(
                f"{'hostile' if hostile else 'repeated':<10} {label:>12} {got['accepted']:>10,} "
                f"{got['deferred']:>15,} {got['peak_mb']:>9.1f} {per_action:>9.0f} {got['seconds']:>6.1f}"
            )
        ratios = ", ".join(f"{r['peak_mb'] / rows[0]['peak_mb']:.2f}x" for r in rows[1:])
        print(f"  peaks against the first cap's: {ratios} (accepted {', '.join(str(r['accepted']) for r in rows)})")


if __name__ == "__main__":
    main()
