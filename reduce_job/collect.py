"""Fetching and checking shard partials: every marker present, every checksum right."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from witple_batch.logs import event
from witple_batch.partials import (
    SUCCESS_FILE,
    PartialError,
    ShardPartial,
    decode_partial,
    parse_success,
    verify_checksum,
)
from witple_batch.run_layout import RunLayout, RunManifest
from witple_batch.s3 import get_bytes

log = logging.getLogger(__name__)


def success_markers(client: Any, layout: RunLayout, shards: int) -> dict[int, dict[str, Any]]:
    """Every shard's parsed `_SUCCESS.json`; fails naming all shards without one."""
    markers, missing = {}, []
    for index in range(shards):
        data = get_bytes(client, layout.work_bucket, layout.shard_prefix(index) + SUCCESS_FILE)
        if data is None:
            missing.append(index)
        else:
            markers[index] = parse_success(data, f"shard {index}")
    if missing:
        raise PartialError(f"shards without {SUCCESS_FILE} (not finished or failed): {missing}")
    return markers


def fetch_partial(client: Any, layout: RunLayout, index: int, marker: dict[str, Any]) -> tuple[ShardPartial, dict]:
    """One shard's arrays, checksum-verified before a byte is parsed."""
    where = f"shard {index}"
    files = {}
    for name in marker["files"]:
        data = get_bytes(client, layout.work_bucket, layout.shard_prefix(index) + name)
        if data is None:
            raise PartialError(f"{where}: {name} is missing")
        verify_checksum(name, data, marker, where)
        files[name] = data
    return decode_partial(files, marker, where), files


def partials(client: Any, layout: RunLayout, manifest: RunManifest) -> Iterator[tuple[int, ShardPartial, dict]]:
    """Shard by shard, so only one shard's arrays are in memory beside the merged state."""
    markers = success_markers(client, layout, len(manifest.shards))
    bad: dict[int, str] = {}
    for index in range(len(manifest.shards)):
        try:
            partial, files = fetch_partial(client, layout, index, markers[index])
        except PartialError as exc:
            bad[index] = str(exc)  # keep checking, to name every bad shard at once
            continue
        event(
            log,
            "partial loaded",
            shard=index,
            users=len(partial.users),
            places=len(partial.places),
            pairs=len(partial.pairs),
        )
        if not bad:
            yield index, partial, files
    if bad:
        raise PartialError(f"corrupt partials in shards {sorted(bad)}: " + "; ".join(bad.values()))
