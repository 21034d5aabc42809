"""The coordinator's settings: what a plan takes (its options) and where it submits (the Batch queue)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from witple_batch.model_source import ModelSource
from witple_batch.settings import env_int, env_required, env_str


@dataclass(frozen=True)
class PlanOptions:
    run_id: str
    shards: int | None  # None: one per target_mb listed and per sizing.ACTIONS_PER_SHARD named
    target_mb: float = 64.0
    since: datetime | None = None  # a window of hour partitions (a backfill); moves no watermark
    until: datetime | None = None
    max_files: int | None = None
    max_records: int | None = None  # actions per run, by the counts in the files' names (maxRecords)
    dry_run: bool = False
    lease_hours: float = 8.0
    model: ModelSource | None = None  # the children's model: the run records the space it plans for
    full: bool = False  # list every key under the prefix, not the hours since the watermark
    lookback_hours: float = 24.0  # hours before the watermark listed again, for files that arrive late

    @property
    def windowed(self) -> bool:
        return self.since is not None or self.until is not None


@dataclass(frozen=True)
class BatchSettings:
    """Where the coordinator submits a run's jobs, and how large one run may be."""

    queue: str
    shard_definition: str
    reduce_definition: str
    name_prefix: str
    actions_per_run: int = 10_000_000  # what one reduce applies well inside its timeout (README)
    max_runs: int = 8  # runs one submission may chain (a backlog clears over several hours)


def batch_settings_from_env(env: Mapping[str, str] | None = None) -> BatchSettings:
    prefix = env_str("NAME_PREFIX", "witple-batch", env) or "witple-batch"
    return BatchSettings(
        queue=env_required("JOB_QUEUE", env),
        shard_definition=env_str("SHARD_JOB_DEFINITION", env=env) or f"{prefix}-shard",
        reduce_definition=env_str("REDUCE_JOB_DEFINITION", env=env) or f"{prefix}-reduce",
        name_prefix=prefix,
        actions_per_run=env_int("MAX_ACTIONS_PER_RUN", 10_000_000, env, minimum=1),
        max_runs=env_int("MAX_RUNS_PER_SUBMIT", 8, env, minimum=1, maximum=100),
    )
