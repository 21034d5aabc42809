"""Fetching and checking shard partials: every marker present, every checksum right, every planned file reported.

Partials are fetched a few shards ahead on a thread pool, each streamed to local disk with its
checksum verified on the way and its arrays checked a chunk at a time (spool.py), while the
caller stages the previous one: memory holds a few chunks per shard in flight and disk at most
`ahead` + 1 shards, whatever their size and number.
"""

from __future__ import annotations

import logging
import tempfile
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from reduce_job.spool import NpyFile, download
from witple_batch.logs import event
from witple_batch.partials import (
    FILES_FILE,
    METRICS_FILE,
    SUCCESS_FILE,
    PartialError,
    check_arrays,
    file_rows,
    parse_success,
)
from witple_batch.run_layout import RunLayout, RunManifest, load_shard_plan
from witple_batch.s3 import get_bytes

log = logging.getLogger(__name__)


@dataclass
class LoadedShard:
    """One shard's partial, checked, on local disk until `close()`."""

    index: int
    arrays: dict[str, NpyFile]
    files: list[dict[str, Any]]
    metrics: dict[str, Any]
    scratch: tempfile.TemporaryDirectory[str]
    where: str

    def close(self) -> None:
        for array in self.arrays.values():
            array.close()
        self.scratch.cleanup()


def success_markers(client: Any, layout: RunLayout, shards: int, key: bytes) -> list[dict[str, Any]]:
    """Every shard's `_SUCCESS.json`, parsed and its signature checked; fails naming all shards without one."""
    markers: list[dict[str, Any]] = []
    missing = []
    for index in range(shards):
        data = get_bytes(client, layout.work_bucket, layout.shard_prefix(index) + SUCCESS_FILE)
        if data is None:
            missing.append(index)
        else:
            where = layout.uri(layout.shard_prefix(index) + SUCCESS_FILE)
            marker = parse_success(data, where, key)
            if marker.get("batch_id") != layout.run_id or marker.get("shard") != index:
                owner = f"run {marker.get('batch_id')!r} shard {marker.get('shard')}"
                raise PartialError(f"{where} is the marker of {owner}, not of this shard")
            markers.append(marker)
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
    client: Any, layout: RunLayout, manifest: RunManifest, index: int, marker: dict[str, Any], key: bytes
) -> LoadedShard:
    """One shard's files streamed to disk, each checksum-verified before a byte is parsed, its
    arrays checked a chunk at a time, and its coverage of its plan."""
    where = f"shard {index}"
    scratch = tempfile.TemporaryDirectory(prefix=f"partial-{index}-")
    arrays: dict[str, NpyFile] = {}
    try:
        for name, sha256 in sorted(marker["files"].items()):
            path = Path(scratch.name) / Path(name).name
            download(client, layout.work_bucket, layout.shard_prefix(index) + name, path, sha256, where)
            if name.endswith(".npy"):
                arrays[name[: -len(".npy")]] = NpyFile(path, where)
        check_arrays(arrays, where)
        directory = Path(scratch.name)
        files = file_rows(_read(directory / FILES_FILE), where)
        metrics = orjson.loads(_read(directory / METRICS_FILE) or b"{}")
        plan = load_shard_plan(client, layout, index, key, sha256=manifest.shards[index]["sha256"])
        planned = {f.key for f in plan.files}
        reported = [f["key"] for f in files]
        if len(reported) != len(set(reported)) or planned != set(reported):
            missing = sorted(planned - set(reported))[:10]
            extra = sorted(set(reported) - planned)[:10]
            raise PartialError(f"{where}: files do not match its plan (missing {missing}, not planned {extra})")
        return LoadedShard(index, arrays, files, metrics, scratch, where)
    except BaseException:
        for array in arrays.values():
            array.close()
        scratch.cleanup()
        raise


def _read(path: Path) -> bytes | None:
    return path.read_bytes() if path.exists() else None


def partials(
    client: Any, layout: RunLayout, manifest: RunManifest, markers: list[dict[str, Any]], key: bytes, ahead: int = 4
) -> Iterator[LoadedShard]:
    """Shard by shard in index order, fetched `ahead` shards in advance; every bad shard named at the end."""
    bad: dict[int, str] = {}
    window: deque[tuple[int, Future[LoadedShard]]] = deque()
    indexes = iter(range(len(markers)))
    with ThreadPoolExecutor(max_workers=ahead, thread_name_prefix="partial") as pool:
        try:
            for index in indexes:
                window.append((index, pool.submit(fetch_shard, client, layout, manifest, index, markers[index], key)))
                if len(window) >= ahead:
                    yield from _next(window, bad)
            while window:
                yield from _next(window, bad)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)  # every fetch still running ends first
            for _, future in window:
                if not future.cancelled() and future.exception() is None:
                    future.result().close()
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
        users=len(shard.arrays["users.id_offsets"]) - 1,
        places=len(shard.arrays["places.catalogue_sha256"]),
        pairs=len(shard.arrays["pairs.user"]),
    )
    if bad:
        shard.close()
        return
    try:
        yield shard
    finally:
        shard.close()
