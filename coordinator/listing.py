"""Listing the input without reading all history: hour partitions from a watermark, or everything.

The collection server writes `<prefix>year=YYYY/month=MM/day=DD/hour=HH/batch-*.json` (DESIGN.md).
An incremental plan lists only the hour partitions from the watermark minus a lookback (files
that arrive late, into an hour already listed) to the next hour, one LIST per hour, so its cost
follows the hours since the last plan, not the input's whole history. A full listing (the first
plan, `--full`, or a scheduled reconcile) walks every key under the prefix, page by page.

Either way keys stream: nothing here holds more than one page of keys.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

from coordinator.sizing import in_window, is_batch_file
from witple_batch.run_layout import InputFile

MAX_HOURS = 24 * 366  # an incremental listing of more hours than this is a full one


def hour_prefix(prefix: str, hour: datetime) -> str:
    return f"{prefix}year={hour:%Y}/month={hour:%m}/day={hour:%d}/hour={hour:%H}/"


def hours(start: datetime, end: datetime) -> Iterator[datetime]:
    """Every hour from `start` up to and including `end` (both truncated to the hour)."""
    hour = start.replace(minute=0, second=0, microsecond=0)
    while hour <= end:
        yield hour
        hour += timedelta(hours=1)


def list_keys(client: Any, bucket: str, prefix: str) -> Iterator[InputFile]:
    """Every object under `prefix`, in key order, one page of 1,000 at a time."""
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            yield InputFile(key=obj["Key"], size=int(obj["Size"]), etag=obj["ETag"].strip('"'))


def list_batch_files(
    client: Any,
    bucket: str,
    prefix: str,
    *,
    start: datetime | None,
    end: datetime,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Iterator[InputFile]:
    """Batch files in key order (oldest partition first) inside [since, until): those of the hour
    partitions from `start` to `end` when `start` is given, else of every key under `prefix`."""
    if start is None or (end - start) > timedelta(hours=MAX_HOURS):
        listed = list_keys(client, bucket, prefix)
    else:
        first = max(start, since) if since is not None else start
        listed = (f for hour in hours(first, end) for f in list_keys(client, bucket, hour_prefix(prefix, hour)))
    for item in listed:
        if is_batch_file(item.key) and in_window(item.key, since, until):
            yield item
