"""Concurrent GETs of a shard's files, yielded in plan order with a read-ahead bounded by count and bytes."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from witple_batch.run_layout import InputFile


class FetchError(Exception):
    """An object could not be read after boto3's retries; the child fails so Batch retries it."""


@dataclass(frozen=True)
class ObjectGone:
    """The planned version is no more (deleted, or overwritten: IfMatch failed). Not this run's to read."""

    reason: str


_GONE = {"NoSuchKey": "deleted after planning", "404": "deleted after planning"}
_CHANGED = {"PreconditionFailed": "overwritten after planning", "412": "overwritten after planning"}


def fetch(client: Any, bucket: str, item: InputFile) -> bytes | ObjectGone:
    try:
        # IfMatch: read exactly the version the planner listed, or leave the file to the next plan
        response = client.get_object(Bucket=bucket, Key=item.key, IfMatch=f'"{item.etag}"')
        return response["Body"].read()
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "error")
        if code in _GONE or code in _CHANGED:
            return ObjectGone(f"s3://{bucket}/{item.key} was {(_GONE | _CHANGED)[code]} ({code})")
        raise FetchError(
            f"s3://{bucket}/{item.key}: {code} ({exc.response.get('Error', {}).get('Message', '')})"
        ) from None
    except BotoCoreError as exc:
        raise FetchError(f"s3://{bucket}/{item.key}: {exc}") from None


def fetch_in_order(
    client: Any,
    bucket: str,
    files: list[InputFile],
    concurrency: int,
    read_ahead_bytes: int,
    before_wait: Callable[[InputFile], None] = lambda _item: None,
) -> Iterator[tuple[InputFile, bytes | ObjectGone]]:
    """At most 2x concurrency bodies and `read_ahead_bytes` listed bytes are held at once (one
    file larger than that is fetched alone), whatever the number and size of the files.

    `before_wait(item)` runs before waiting for each file: from then until the next call, a
    stop (a GET that hangs, a parse that runs out of memory) is that file's doing.
    """
    window: deque[tuple[InputFile, Future[bytes | ObjectGone]]] = deque()
    in_flight = 0
    pending = deque(files)
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="s3-get") as pool:
        try:
            while pending or window:
                while (
                    pending
                    and len(window) < 2 * concurrency
                    and (not window or in_flight + pending[0].size <= read_ahead_bytes)
                ):
                    item = pending.popleft()
                    window.append((item, pool.submit(fetch, client, bucket, item)))
                    in_flight += item.size
                done, future = window.popleft()
                in_flight -= done.size
                before_wait(done)
                yield done, future.result()
        finally:
            for _, future in window:
                future.cancel()
