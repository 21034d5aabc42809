"""What the benchmarks measure in a fresh process of its own, each printing one JSON line last.

    python -m benchmarks.probes startup plan|shard|reduce   (e2e startup: a job's start-up, step by step)
    python -m benchmarks.probes coordinator plan|sync [options]   (scale planner, catalogue: its peak RSS)
    python -m benchmarks.probes capped-shard FILES CAP KIND   (scale shard-caps: one shard's peak above its model)

Only the standard library is imported before a probe starts, so a job's imports, or a
process's peak, are its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from witple_batch.settings import CommonConfig

REPO = Path(__file__).resolve().parents[1]
T = TypeVar("T")
JOBS = ("plan", "shard", "reduce")
AGE = "process age at the end"
MODULES = {
    "plan": ("coordinator.cli", "coordinator.plan"),
    "shard": ("shard_job.cli", "shard_job.fetch_process", "shard_job.child", "shard_job.config"),
    "reduce": ("reduce_job.cli", "reduce_job.config", "reduce_job.run"),
}


def _timed(steps: dict[str, float], name: str, work: Callable[[], T]) -> T:
    started = time.perf_counter()
    result = work()
    steps[name] = (time.perf_counter() - started) * 1000
    return result


def _settings(job: str) -> CommonConfig:
    """The job's settings, read and validated as the job reads them (modules already imported)."""
    if job == "reduce":
        from reduce_job.config import reduce_config_from_env

        return reduce_config_from_env().common
    if job == "shard":
        from shard_job.config import shard_config_from_env

        return shard_config_from_env().common
    from witple_batch.settings import common_from_env

    return common_from_env()


def _shard_steps(steps: dict[str, float], common: CommonConfig, client: Any, layout: Any) -> None:
    from witple_batch.database import connect_for
    from witple_batch.model_files import verify_model_dir  # imported by shard_job.child
    from witple_batch.run_layout import load_shard_plan

    folder = Path(os.environ["MODEL_DIR"])
    manifest = _timed(steps, "model check (hashes)", lambda: verify_model_dir(folder))
    with _timed(steps, "connect", lambda: connect_for(common, "benchmarks.e2e")):
        _timed(steps, "shard plan read", lambda: load_shard_plan(client, layout, 0, common.partials_key))
    _timed(steps, "model libraries import", lambda: __import__("witple_batch.embedder"))
    from witple_batch.embedder import Embedder

    _timed(steps, "model session", lambda: Embedder(folder, manifest=manifest))
    command = [sys.executable, "-c", "import shard_job.fetch_process"]  # its S3 client comes with its first GET
    _timed(steps, "GET process start-up", lambda: subprocess.run(command, cwd=REPO, check=True))


def probe(job: str) -> dict[str, float]:
    """Run in a fresh process: the job's start-up steps in the order the job takes them."""
    import importlib

    steps: dict[str, float] = {}
    _timed(steps, "imports", lambda: [importlib.import_module(m) for m in MODULES[job]])
    # loaded by every job's imports step above: these lines import nothing new
    from witple_batch.database import connect_for
    from witple_batch.resources import process_age_seconds
    from witple_batch.run_layout import RunLayout, load_manifest
    from witple_batch.s3 import s3_client
    from witple_batch.schema import migrate

    common = _timed(steps, "settings", lambda: _settings(job))
    client = _timed(steps, "S3 client", lambda: s3_client(common.region))
    layout = RunLayout(common.work_bucket, common.work_prefix, os.environ["BATCH_ID"])
    if job == "shard":
        _shard_steps(steps, common, client, layout)
    else:
        with _timed(steps, "connect", lambda: connect_for(common, "benchmarks.e2e")) as conn:
            _timed(steps, "migrations check", lambda: migrate(conn))
        if job == "reduce":
            _timed(steps, "manifest read", lambda: load_manifest(client, layout, common.partials_key))
    steps[AGE] = process_age_seconds() * 1000  # a check on the sum: it counts the interpreter's start too
    return steps


def coordinator(argv: list[str]) -> dict[str, float]:
    """`python -m coordinator argv` in this process (its JSON line printed), then this process's peak RSS."""
    from coordinator.cli import main
    from witple_batch.resources import peak_rss_mb

    if main(argv) != 0:
        sys.exit(1)
    return {"peak_rss_mb": peak_rss_mb()}


# one capped shard: files of PER_FILE actions whose names claim 0, read through the child but S3 and the database
PER_FILE = 10_000
KINDS = ("ids all new", "users new", "repeated ids")
ID_CHARS = 256
PLANNED_US = 1_737_000_000_000_000


def _capped_body(index: int, kind: str) -> bytes:
    actions = []
    for i in range(index * PER_FILE, (index + 1) * PER_FILE):
        user = f"{i:0{ID_CHARS}d}" if kind != "repeated ids" else f"user-{i % 4_000}"
        place = f"p{i:0{ID_CHARS - 1}d}" if kind == "ids all new" else f"{i % 2_000}"
        actions.append({"user_id": user, "place_id": place, "place_category": "nature", "action_type": "click"})
    return json.dumps({"actions": actions}, separators=(",", ":")).encode()


def capped_shard(files: int, cap: int, kind: str) -> dict[str, float]:
    """One shard through the child in this process, caps at `cap` actions and `cap` / 4 places (0: none)."""
    import tempfile

    from shard_job.child import build_partial
    from shard_job.config import shard_config_from_env
    from shard_job.input_files import InputLimits
    from shard_job.read_shard import RejectsFile, ShardInput, add_file
    from witple_batch.embedder import Embedder
    from witple_batch.model_source import DEFAULT_MODEL_DIR
    from witple_batch.partials import encode_partial
    from witple_batch.resources import peak_rss_mb
    from witple_batch.run_layout import InputFile

    mib = 1 << 20
    limits = InputLimits(
        max_object_bytes=64 * mib, max_decompressed_bytes=256 * mib, max_records=100_000, max_record_bytes=64 * 1024
    )
    cap = cap or files * PER_FILE * 10
    caps = {"MAX_ACTIONS_PER_SHARD": str(cap), "MAX_PLACES_PER_SHARD": str(cap // 4)}
    secret = {"BATCH_ID": "shard-caps", "PARTIALS_SECRET": "x" * 32, "CATALOGUE_SOURCE": "none"}
    config = shard_config_from_env({**secret, **caps})
    embedder = Embedder(Path(os.environ.get("MODEL_DIR", DEFAULT_MODEL_DIR)), threads=1)
    with tempfile.TemporaryDirectory() as tmp, RejectsFile(Path(tmp) / "rejects.jsonl.gz") as rejects:
        shard = ShardInput(rejects=rejects, max_actions=config.max_actions, max_places=config.max_places)
        before, started = peak_rss_mb(), time.perf_counter()
        for index in range(files):
            body = _capped_body(index, kind)
            add_file(shard, InputFile(f"batch-{index}-0-{index:08d}.json", len(body), "e"), body, limits, PLANNED_US)
            del body
        partial, _counts, _seconds = build_partial(shard, embedder, config, client=None, conn=None)
        encoded = sum(len(data) for _name, data in encode_partial(partial))
        return {
            "accepted": shard.records_accepted,
            "places": len(partial.place_ids),
            "files_left": shard.files_deferred,
            "encoded_mb": encoded / mib,
            "seconds": time.perf_counter() - started,
            "peak_mb": peak_rss_mb() - before,
            "process_peak_mb": peak_rss_mb(),
        }


def main(argv: list[str]) -> None:
    command, *rest = argv
    if command == "startup":
        result = probe(rest[0])
    elif command == "coordinator":
        result = coordinator(rest)
    else:
        files, cap, kind = rest
        result = capped_shard(int(files), int(cap), kind)
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
