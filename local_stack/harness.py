"""One run end to end, the way AWS Batch would run it: plan, the shard array, the reduce.

The one harness behind scripts/run_local.py, the tests and every benchmark. `processes=True`
runs each job as its own `python -m` process with the environment Batch gives it (the array's
children up to `parallel` at once, each retried up to `attempts`, as the job definition would);
`processes=False` runs the same functions in this process (the tests' fast path; each child still
has its own GET process). Either way the services come from `env` (moto S3, PostgreSQL, webhook).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from local_stack.array_runner import ArrayResult, run_array
from witple_batch.run_layout import RunLayout, load_report
from witple_batch.s3 import s3_client
from witple_batch.settings import common_from_env

REPO = Path(__file__).resolve().parents[1]


@dataclass
class RunResult:
    """What one run left: its plan, the array's outcome, the reduce's log, report.json, seconds per job."""

    plan: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)  # plan, shards, reduce: wall time
    array: ArrayResult | None = None
    reduce_log: str = ""
    report: dict[str, Any] | None = None
    log_dir: Path | None = None

    @property
    def succeeded(self) -> bool:
        return self.plan["shards"] == 0 or self.report is not None

    def shard_seconds(self) -> dict[str, float]:
        """The slowest shard's own stage seconds, from its "shard finished" log line (processes only)."""
        lines = [
            orjson.loads(line)["seconds"]
            for log in sorted((self.log_dir or Path("/nonexistent")).glob("shard-*.log"))
            for line in log.read_text().splitlines()
            if '"shard finished"' in line
        ]
        return max(lines, key=lambda seconds: seconds["start"] + seconds["total"], default={})


def plan(env: Mapping[str, str], **options: Any) -> dict[str, Any]:
    """`python -m coordinator plan` in this process: past runs settled, one run planned (PlanOptions' fields)."""
    from coordinator.cli import prepared
    from coordinator.config import PlanOptions
    from coordinator.plan import plan_run
    from witple_batch.model_source import ModelSource

    config = common_from_env(env)
    defaults = {"run_id": env["BATCH_ID"], "shards": None, "model": ModelSource.from_env(env)}
    plan_options = PlanOptions(**{**defaults, **options})
    client = s3_client(config.region)
    with prepared(config, client, "local_stack.plan", settle=not plan_options.dry_run) as conn:
        return plan_run(conn, client, config, plan_options).as_json()


def plan_sync(env: Mapping[str, str], **options: Any) -> dict[str, Any]:
    """`python -m coordinator sync` in this process: one catalogue sync run planned (SyncOptions' fields)."""
    from coordinator import sync
    from coordinator.cli import prepared
    from witple_batch.catalogue import CatalogueSource
    from witple_batch.catalogue_column import CatalogueColumn
    from witple_batch.model_source import ModelSource

    config = common_from_env(env)
    defaults = {
        "run_id": env["BATCH_ID"],
        "catalogue": CatalogueSource.parse(env.get("CATALOGUE_SOURCE", "auto")),
        "model": ModelSource.from_env(env),
        "column": CatalogueColumn.from_env(env),
    }
    sync_options = sync.SyncOptions(**{**defaults, **options})
    client = s3_client(config.region)
    with prepared(config, client, "local_stack.sync", settle=not sync_options.dry_run) as conn:
        return sync.plan_sync(conn, client, config, sync_options).as_json()


def run_child(env: Mapping[str, str], index: int) -> dict[str, Any]:
    """One array child in this process (with its own GET process, as in production)."""
    from shard_job.child import run_shard
    from shard_job.config import shard_config_from_env
    from shard_job.fetch_process import FetchProcess

    config = shard_config_from_env({**env, "AWS_BATCH_JOB_ARRAY_INDEX": str(index)})
    with FetchProcess.started({**os.environ, **env}) as reader:
        return run_shard(s3_client(config.common.region), reader, config)


def reduce(env: Mapping[str, str]) -> Any:
    """The reduce in this process; returns its Outcome."""
    from reduce_job.config import reduce_config_from_env
    from reduce_job.run import run_reduce

    config = reduce_config_from_env(env)
    return run_reduce(s3_client(config.common.region), config)


def module(
    name: str, env: Mapping[str, str], *args: str, timeout: float | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m name args` as a job runs it: its own process with `env` over this one's."""
    return subprocess.run(
        [sys.executable, "-m", name, *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
        timeout=timeout,
    )


def run_batch(
    env: Mapping[str, str],
    *,
    shards: int | None = None,
    processes: bool = False,
    parallel: int = 1,
    attempts: int = 1,
    log_dir: Path | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    sync: bool = False,
    **plan_options: Any,
) -> RunResult:
    """Plan (env's BATCH_ID), run every child, then the reduce, as Batch would; raises when a job fails.
    `sync`: a catalogue sync run (`coordinator sync`, plan_options are SyncOptions' fields) instead."""
    started = time.perf_counter()
    if processes:
        if sync:
            flags = {"per_child": "--sync-per-child", "max_children": "--max-sync-children"}
            args = ["sync", *(f"{flags[name]}={value}" for name, value in plan_options.items())]
        else:
            args = ["plan", *(["--shards", str(shards)] if shards else [])]
        planned = module("coordinator", env, *args, "--batch-id", env["BATCH_ID"])
        if planned.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({planned.returncode}): {planned.stderr[-3000:]}")
        result = RunResult(plan=orjson.loads(planned.stdout))
    elif sync:
        result = RunResult(plan=plan_sync(env, **plan_options))
    else:
        result = RunResult(plan=plan(env, shards=shards, **plan_options))
    result.seconds["plan"] = time.perf_counter() - started
    if result.plan["shards"] == 0:
        return result
    started = time.perf_counter()
    if processes:
        result.log_dir = log_dir or REPO / ".cache" / "runs" / env["BATCH_ID"]
        result.array = run_array(dict(env), result.plan["shards"], parallel, attempts, result.log_dir, on_progress)
        if not result.array.succeeded:
            raise RuntimeError(
                f"shards {result.array.failed} failed after {attempts} attempts; logs in {result.log_dir}"
            )
    else:
        for index in range(result.plan["shards"]):
            run_child(env, index)
    result.seconds["shards"] = time.perf_counter() - started
    started = time.perf_counter()
    if processes:
        reduced = module("reduce_job", env)
        result.reduce_log = reduced.stderr
        if reduced.returncode != 0:
            raise RuntimeError(f"reduce failed ({reduced.returncode}): {reduced.stderr[-3000:]}")
    else:
        reduce(env)
    result.seconds["reduce"] = time.perf_counter() - started
    common = common_from_env(env)
    result.report = load_report(
        s3_client(common.region), RunLayout(common.work_bucket, common.work_prefix, env["BATCH_ID"])
    )
    return result
