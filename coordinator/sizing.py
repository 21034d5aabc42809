"""How large a run is and how it splits: which listed objects to take, how many shards, which file where. Pure."""

from __future__ import annotations

import heapq
import math
import re
from datetime import UTC, datetime

from witple_batch.run_layout import InputFile
from witple_batch.watermark import partition_hour

MAX_ARRAY_SIZE = 10_000  # AWS Batch's array size limit
RUN_CAP_SLACK = 1.25  # shards are balanced by bytes, not actions: room for the imbalance
ACTIONS_PER_SHARD = 500_000  # half MAX_ACTIONS_PER_SHARD's default: shards balanced by bytes stay under it
SHARE_FLOOR = 100_000  # a shard's share of a run cap is at least a file's records (MAX_RECORDS_PER_FILE's default)
_BATCH_NAME = re.compile(r"^batch-[^/]*\.json(\.gz)?$")
_ACTION_COUNT = re.compile(r"^batch-\d+-(\d+)-")  # batch-<epoch ms>-<action count>-<uuid>.json


def is_batch_file(key: str) -> bool:
    return bool(_BATCH_NAME.match(key.rsplit("/", 1)[-1]))


def parse_hour(text: str) -> datetime:
    """`2025-01-15`, `2025-01-15T14`, `2025-01-15T14:30` -> that hour (UTC, naive)."""
    value = text.strip()
    if len(value) == 13 and value[10] in "T ":
        value += ":00"
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.replace(minute=0, second=0, microsecond=0)


def in_window(key: str, since: datetime | None, until: datetime | None) -> bool:
    """Whether a batch file's partition hour is inside [since, until) (always, without bounds)."""
    if since is None and until is None:
        return True
    hour = partition_hour(key)
    return hour is not None and (since is None or hour >= since) and (until is None or hour < until)


def actions_in_key(key: str) -> int:
    """The action count the collection server writes into a batch file's name (1 without one)."""
    match = _ACTION_COUNT.match(key.rsplit("/", 1)[-1])
    return int(match.group(1)) if match else 1


def file_limit(files: list[InputFile], max_files: int | None, max_records: int | None) -> int | None:
    """How many of `files` (oldest first) one run takes: at most `max_files`, and no more files
    than fit `max_records` actions by their names (always at least one). None: no limit yet."""
    limit = max_files
    if max_records is not None:
        total = 0
        for n, item in enumerate(files):
            total += actions_in_key(item.key)
            if total > max_records:
                fit = max(n, 1)
                limit = fit if limit is None else min(limit, fit)
                break
    return limit


def shard_count(files: list[InputFile], shards: int | None, target_mb: float, max_records: int | None = None) -> int:
    """File shards: `shards`, else one per `target_mb` listed and per ACTIONS_PER_SHARD named
    (compressed files hold many actions per byte); with a run cap, few enough that each
    one's share of it (shard_action_share) holds at least SHARE_FLOOR actions: every shard takes
    its first file whatever it holds, so the run stays within 2 x RUN_CAP_SLACK x the cap."""
    if not files:
        return 0
    if shards is None:
        total = sum(f.size for f in files)
        named = sum(actions_in_key(f.key) for f in files)
        shards = max(math.ceil(total / (target_mb * 1024 * 1024)), math.ceil(named / ACTIONS_PER_SHARD))
    if max_records is not None:
        shards = min(shards, math.ceil(RUN_CAP_SLACK * max_records / SHARE_FLOOR))
    return max(1, min(shards, len(files), MAX_ARRAY_SIZE))


def shard_action_share(max_records: int | None, shards: int) -> int | None:
    """What each of a run's `shards` file shards may accept when the run takes at most `max_records`
    actions by its files' names: names can understate, so the children hold the run to it (at most
    RUN_CAP_SLACK times over, plus a first file each). None: no run cap."""
    if max_records is None or shards == 0:
        return None
    return max(1, math.ceil(RUN_CAP_SLACK * max_records / shards))


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
