"""A shard's memory against its caps: files whose names say 0 actions, ids all new.

The planner sizes runs by the action counts in file names and shards by listed bytes; neither
bounds what a shard holds when a producer understates its counts or gzip inflates. The child's
own caps do: past MAX_ACTIONS_PER_SHARD accepted actions or MAX_PLACES_PER_SHARD distinct
places, the rest of its files wait for the next plan. Each row reads the same stream of files
(10,000 actions each, named `batch-<ms>-0-<id>.json`) into one shard, in a fresh process,
through the whole child but S3 and the database: reading and aggregation
(shard_job/read_shard.py, witple_batch/aggregate.py), place texts and content vectors
(shard_job/child.py::build_partial, the catalogue off) and the partial's encoding
(witple_batch/partials.py::encode_partial, each file dropped as the writer's upload would).
It prints the peak resident memory above the process's size once the model is loaded (VmHWM):

  * ids all new: every action a new user id and a new place id, 256 characters each (the place
    cap binds first: a cap of a quarter of the actions, as the defaults' 1,000,000 / 250,000);
  * users new: every action a new 256-character user id, 2,000 places;
  * repeated ids: 4,000 users and 2,000 places, as an hourly batch.

"no cap" is the child before the caps (caps above the input). Within one run, the peak should
follow the caps, not the input.

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

from shard_job.child import build_partial
from shard_job.config import shard_config_from_env
from shard_job.input_files import InputLimits
from shard_job.read_shard import RejectsFile, ShardInput, add_file
from witple_batch.embedder import Embedder
from witple_batch.model_source import DEFAULT_MODEL_DIR
from witple_batch.partials import encode_partial
from witple_batch.resources import peak_rss_mb
from witple_batch.run_layout import InputFile

PER_FILE = 10_000
MIB = 1 << 20
LIMITS = InputLimits(
    max_object_bytes=64 * MIB, max_decompressed_bytes=256 * MIB, max_records=100_000, max_record_bytes=64 * 1024
)
PLANNED_US = 1_737_000_000_000_000
ID_CHARS = 256
KINDS = ("ids all new", "users new", "repeated ids")
ENV = {"BATCH_ID": "shard-cap-bench", "PARTIALS_SECRET": "x" * 32, "CATALOGUE_SOURCE": "none"}


def _body(index: int, kind: str) -> bytes:
    actions = []
    for i in range(index * PER_FILE, (index + 1) * PER_FILE):
        user = f"{i:0{ID_CHARS}d}" if kind != "repeated ids" else f"user-{i % 4_000}"
        place = f"p{i:0{ID_CHARS - 1}d}" if kind == "ids all new" else f"{i % 2_000}"
        actions.append({"user_id": user, "place_id": place, "place_category": "nature", "action_type": "click"})
    return orjson.dumps({"actions": actions})


def one(files: int, cap: int, kind: str) -> dict[str, float]:
    """One shard through the child, in this process: its peak above the start, and counts."""
    config = shard_config_from_env({**ENV, "MAX_ACTIONS_PER_SHARD": str(cap), "MAX_PLACES_PER_SHARD": str(cap // 4)})
    embedder = Embedder(DEFAULT_MODEL_DIR, threads=1)
    with tempfile.TemporaryDirectory() as tmp, RejectsFile(Path(tmp) / "rejects.jsonl.gz") as rejects:
        shard = ShardInput(rejects=rejects, max_actions=config.max_actions, max_places=config.max_places)
        before = peak_rss_mb()
        started = time.perf_counter()
        for index in range(files):
            body = _body(index, kind)
            add_file(shard, InputFile(f"batch-{index}-0-{index:08d}.json", len(body), "e"), body, LIMITS, PLANNED_US)
            del body
        partial, _counts, _seconds = build_partial(shard, embedder, config, client=None, conn=None)
        encoded = sum(len(data) for _name, data in encode_partial(partial))
        return {
            "accepted": shard.records_accepted,
            "places": len(partial.place_ids),
            "files_left": shard.files_deferred,
            "encoded_mb": encoded / MIB,
            "seconds": time.perf_counter() - started,
            "peak_mb": peak_rss_mb() - before,
            "process_peak_mb": peak_rss_mb(),
        }


def _in_process(files: int, cap: int, kind: str) -> dict[str, float]:
    """one() in a fresh process, so each row's peak is its own."""
    argv = [sys.executable, "-m", "benchmarks.shard_cap_bench", "--one", f"{files},{cap},{KINDS.index(kind)}"]
    out = subprocess.run(argv, check=True, capture_output=True, text=True)
    return orjson.loads(out.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=60, help=f"files of {PER_FILE:,} actions")
    parser.add_argument("--caps", default="150000,300000", help="MAX_ACTIONS_PER_SHARD values (places: a quarter)")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # files,cap,kind: one row, in this process
    args = parser.parse_args()
    if args.one:
        files, cap, kind = (int(v) for v in args.one.split(","))
        print(orjson.dumps(one(files, cap, KINDS[kind])).decode())
        return
    caps = [int(c) for c in args.caps.split(",")]
    total = args.files * PER_FILE
    print(f"input: {args.files} files, {total:,} actions, every name claiming 0 actions")
    print(
        f"{'ids':<13} {'action cap':>10} {'accepted':>9} {'places':>8} {'files left':>10} "
        f"{'partial MiB':>11} {'peak MiB':>9} {'B/action':>9} {'process':>8} {'s':>5}"
    )
    for kind in KINDS:
        rows = []
        for cap in [*caps, total * 10]:
            got = _in_process(args.files, cap, kind)
            rows.append(got)
            label = "no cap" if cap >= total * 10 else f"{cap:,}"
            per_action = got["peak_mb"] * MIB / max(got["accepted"], 1)
            print(
                f"{kind:<13} {label:>10} {got['accepted']:>9,} {got['places']:>8,} {got['files_left']:>10,} "
                f"{got['encoded_mb']:>11.1f} {got['peak_mb']:>9.1f} {per_action:>9.0f} "
                f"{got['process_peak_mb']:>8.0f} {got['seconds']:>5.1f}"
            )
        ratios = ", ".join(f"{r['peak_mb'] / rows[0]['peak_mb']:.2f}x" for r in rows[1:])
        print(f"  peaks against the first cap's: {ratios}")


if __name__ == "__main__":
    main()
