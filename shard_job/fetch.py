"""Concurrent GETs of a shard's files, yielded in manifest order with a bounded read-ahead."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from witple_batch.run_layout import InputFile


class FetchError(Exception):
    """An object could not be read after boto3's retries; the child fails so Batch retries it."""


def fetch(client: Any, bucket: str, item: InputFile) -> bytes:
    try:
        # IfMatch: read exactly the version the planner listed, or fail loudly
        response = client.get_object(Bucket=bucket, Key=item.key, IfMatch=f'"{item.etag}"')
        return response["Body"].read()
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "error")
        raise FetchError(
            f"s3://{bucket}/{item.key}: {code} ({exc.response.get('Error', {}).get('Message', '')})"
        ) from None
    except BotoCoreError as exc:
        raise FetchError(f"s3://{bucket}/{item.key}: {exc}") from None


def fetch_in_order(
    client: Any, bucket: str, files: list[InputFile], concurrency: int
) -> Iterator[tuple[InputFile, bytes]]:
    """At most 2x concurrency bodies are held at once, whatever the number of files."""
    window: deque[tuple[InputFile, Future[bytes]]] = deque()
    pending = iter(files)
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="s3-get") as pool:
        try:
            for item in pending:
                window.append((item, pool.submit(fetch, client, bucket, item)))
                if len(window) >= 2 * concurrency:
                    done, future = window.popleft()
                    yield done, future.result()
            while window:
                done, future = window.popleft()
                yield done, future.result()
        finally:
            for _, future in window:
                future.cancel()
