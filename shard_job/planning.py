"""Pure planning: which listed objects to take and how to split them into shards."""

from __future__ import annotations

import heapq
import math
import re
from collections.abc import Iterable
from datetime import UTC, datetime

from witple_batch.run_layout import InputFile

MAX_ARRAY_SIZE = 10_000  # AWS Batch's array size limit
_BATCH_NAME = re.compile(r"^batch-[^/]*\.json(\.gz)?$")
_PARTITION = re.compile(r"year=(\d{4})/month=(\d{1,2})/day=(\d{1,2})/hour=(\d{1,2})/")


def is_batch_file(key: str) -> bool:
    return bool(_BATCH_NAME.match(key.rsplit("/", 1)[-1]))


def partition_hour(key: str) -> datetime | None:
    match = _PARTITION.search(key)
    if not match:
        return None
    try:
        return datetime(*(int(g) for g in match.groups()))
    except ValueError:
        return None


def parse_hour(text: str) -> datetime:
    """`2025-01-15`, `2025-01-15T14`, `2025-01-15T14:30` -> that hour (UTC, naive)."""
    value = text.strip()
    if len(value) == 13 and value[10] in "T ":
        value += ":00"
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.replace(minute=0, second=0, microsecond=0)


def select_files(
    listed: Iterable[InputFile], *, since: datetime | None = None, until: datetime | None = None
) -> list[InputFile]:
    """Batch files inside [since, until) by partition, oldest keys first."""
    chosen = []
    for item in listed:
        if not is_batch_file(item.key):
            continue
        if since is not None or until is not None:
            hour = partition_hour(item.key)
            if hour is None or (since is not None and hour < since) or (until is not None and hour >= until):
                continue
        chosen.append(item)
    chosen.sort(key=lambda f: f.key)
    return chosen


def shard_count(files: list[InputFile], shards: int | None, target_mb: float) -> int:
    if not files:
        return 0
    if shards is None:
        total = sum(f.size for f in files)
        shards = math.ceil(total / (target_mb * 1024 * 1024))
    return max(1, min(shards, len(files), MAX_ARRAY_SIZE))


def balance(files: list[InputFile], shards: int) -> list[list[InputFile]]:
    """Largest file first onto the lightest shard (LPT); ties broken by key and index, so deterministic."""
    if shards == 0:
        return []
    heap = [(0, index) for index in range(shards)]
    buckets: list[list[InputFile]] = [[] for _ in range(shards)]
    for item in sorted(files, key=lambda f: (-f.size, f.key)):
        load, index = heapq.heappop(heap)
        buckets[index].append(item)
        heapq.heappush(heap, (load + item.size, index))
    return [sorted(bucket, key=lambda f: f.key) for bucket in buckets]
