"""Runs a planned batch the way AWS Batch would: N child processes with Batch's environment,
retries up to the job's attempts, then the reduce only when every child succeeded."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Child:
    index: int
    attempt: int = 0
    process: subprocess.Popen | None = None
    log_path: Path | None = None
    returncode: int | None = None


@dataclass
class ArrayResult:
    succeeded: bool
    seconds: float
    attempts: dict[int, int] = field(default_factory=dict)
    failed: list[int] = field(default_factory=list)


def _child_env(base: dict[str, str], array_id: str, index: int, size: int, attempt: int) -> dict[str, str]:
    return {
        **base,
        "AWS_BATCH_JOB_ARRAY_INDEX": str(index),
        "AWS_BATCH_JOB_ARRAY_SIZE": str(size),
        "AWS_BATCH_JOB_ID": f"{array_id}:{index}",
        "AWS_BATCH_JOB_ATTEMPT": str(attempt),
    }


def run_array(
    env: dict[str, str],
    shards: int,
    parallel: int,
    attempts: int,
    log_dir: Path,
    on_progress: Callable[[int, int], None] | None = None,
) -> ArrayResult:
    """Start up to `parallel` children at once; a failed child is started again until `attempts`."""
    started = time.monotonic()
    array_id = f"local-{env['BATCH_ID']}"
    log_dir.mkdir(parents=True, exist_ok=True)
    waiting = [Child(i) for i in range(shards)]
    running: list[Child] = []
    done: list[Child] = []
    failed: list[Child] = []
    try:
        while waiting or running:
            while waiting and len(running) < parallel:
                child = waiting.pop(0)
                child.attempt += 1
                child.log_path = log_dir / f"shard-{child.index:05d}-attempt-{child.attempt}.log"
                with child.log_path.open("wb") as log:
                    child.process = subprocess.Popen(
                        [sys.executable, "-m", "shard_job"],
                        env={**os.environ, **_child_env(env, array_id, child.index, shards, child.attempt)},
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                running.append(child)
            time.sleep(0.02)  # a child's exit is seen within 20 ms
            for child in list(running):
                code = child.process.poll() if child.process else None
                if code is None:
                    continue
                running.remove(child)
                child.returncode = code
                if code == 0:
                    done.append(child)
                elif code != 2 and child.attempt < attempts:  # Batch's retry strategy exits on code 2
                    waiting.append(child)
                else:
                    failed.append(child)
                if on_progress:
                    on_progress(len(done), shards)
    finally:
        for child in running:
            if child.process and child.process.poll() is None:
                child.process.terminate()
    return ArrayResult(
        succeeded=not failed,
        seconds=time.monotonic() - started,
        attempts={c.index: c.attempt for c in done + failed},
        failed=sorted(c.index for c in failed),
    )
