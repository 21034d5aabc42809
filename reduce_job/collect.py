"""Fetching and checking shard partials: every marker present, every checksum right, every planned file reported.

Partials are fetched a few shards ahead on a thread pool (checksums verified as each file
arrives) while the caller stages the previous one, so memory holds at most `ahead` shards,
whatever their number.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import orjson

from witple_batch.logs import event
from witple_batch.partials import (
    METRICS_FILE,
    SUCCESS_FILE,
    PartialError,
    ShardPartial,
    decode_partial,
    parse_success,
    verify_checksum,
)
from witple_batch.run_layout import RunLayout, RunManifest, load_shard_plan
from witple_batch.s3 import get_bytes

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedShard:
    index: int
    partial: ShardPartial
    metrics: dict[str, Any]


def success_markers(client: Any, layout: RunLayout, shards: int) -> list[dict[str, Any]]:
    """Every shard's parsed `_SUCCESS.json`; fails naming all shards without one."""
    markers: list[dict[str, Any]] = []
    missing = []
    for index in range(shards):
        data = get_bytes(client, layout.work_bucket, layout.shard_prefix(index) + SUCCESS_FILE)
        if data is None:
            missing.append(index)
        else:
            markers.append(parse_success(data, f"shard {index}"))
    if missing:
        shown = missing[:20]
        raise PartialError(
            f"shards without {SUCCESS_FILE} (not finished or failed): {shown}"
            + (f" and {len(missing) - len(shown)} more" if len(missing) > len(shown) else "")
        )
    origins = {(m["content_model"], m["place_text_version"]) for m in markers}
    if len(origins) > 1:
        # one batch, one vector space: mixing two models' vectors would corrupt every mean
        raise PartialError(
            f"shards disagree on what made their content vectors: {sorted(origins)} (model sha256, place text version)"
        )
    return markers


def fetch_shard(
    client: Any, layout: RunLayout, manifest: RunManifest, index: int, marker: dict[str, Any]
) -> LoadedShard:
    """One shard's files, each checksum-verified before a byte is parsed, and its coverage of its plan."""
    where = f"shard {index}"
    files = {}
    for name in marker["files"]:
        data = get_bytes(client, layout.work_bucket, layout.shard_prefix(index) + name)
        if data is None:
            raise PartialError(f"{where}: {name} is missing")
        verify_checksum(name, data, marker, where)
        files[name] = data
    partial = decode_partial(files, marker, where)
    plan = load_shard_plan(client, layout, index, sha256=manifest.shards[index]["sha256"])
    planned = {f.key for f in plan.files}
    reported = [f["key"] for f in partial.files]
    if len(reported) != len(set(reported)) or planned != set(reported):
        missing = sorted(planned - set(reported))[:10]
        extra = sorted(set(reported) - planned)[:10]
        raise PartialError(f"{where}: files do not match its plan (missing {missing}, not planned {extra})")
    return LoadedShard(index, partial, orjson.loads(files[METRICS_FILE]))


def partials(
    client: Any, layout: RunLayout, manifest: RunManifest, markers: list[dict[str, Any]], ahead: int = 4
) -> Iterator[LoadedShard]:
    """Shard by shard in index order, fetched `ahead` shards in advance; every bad shard named at the end."""
    bad: dict[int, str] = {}
    window: deque[tuple[int, Future[LoadedShard]]] = deque()
    indexes = iter(range(len(markers)))
    with ThreadPoolExecutor(max_workers=ahead, thread_name_prefix="partial") as pool:
        try:
            for index in indexes:
                window.append((index, pool.submit(fetch_shard, client, layout, manifest, index, markers[index])))
                if len(window) >= ahead:
                    yield from _next(window, bad)
            while window:
                yield from _next(window, bad)
        finally:
            for _, future in window:
                future.cancel()
    if bad:
        raise PartialError(f"corrupt partials in shards {sorted(bad)}: " + "; ".join(bad.values()))


def _next(window: deque[tuple[int, Future[LoadedShard]]], bad: dict[int, str]) -> Iterator[LoadedShard]:
    index, future = window.popleft()
    try:
        shard = future.result()
    except PartialError as exc:
        bad[index] = str(exc)  # keep checking, to name every bad shard at once
        return
    event(
        log,
        "partial loaded",
        shard=index,
        users=len(shard.partial.user_ids),
        places=len(shard.partial.place_ids),
        pairs=len(shard.partial.pair_user),
    )
    if not bad:
        yield shard
