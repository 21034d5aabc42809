"""Finding the file that stops a child, so the next attempt sets it aside instead of dying on it again.

A child that is killed (out of memory), crashes or runs out of time cannot say which file did
it. So a retried child (attempt >= 2) notes each file in a small object before reading it; if
that attempt dies too, the next one finds the file it died on and quarantines it (ledger status
`quarantined`, reason named), and the run completes for every other file. Suspects accumulate
across attempts. The first attempt writes nothing: the happy path pays no PUT per file.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import orjson

from witple_batch.logs import event
from witple_batch.run_layout import RunLayout
from witple_batch.s3 import get_bytes

log = logging.getLogger(__name__)


@dataclass
class Progress:
    client: Any
    bucket: str
    key: str
    attempt: int
    suspects: dict[str, str] = field(default_factory=dict)  # input key -> why it is set aside

    @property
    def careful(self) -> bool:
        return self.attempt > 1

    @classmethod
    def load(cls, client: Any, layout: RunLayout, index: int, attempt: int) -> Progress:
        progress = cls(client, layout.work_bucket, layout.progress_key(index), attempt)
        if not progress.careful:
            return progress
        body = get_bytes(client, progress.bucket, progress.key)
        if body is not None:
            noted = orjson.loads(body)
            progress.suspects = dict(noted.get("suspects", {}))
            if noted.get("reading"):
                progress.suspects[noted["reading"]] = (
                    f"the shard child stopped while reading it on attempt {noted['attempt']} "
                    "(killed, out of memory, crashed or out of time)"
                )
        if progress.suspects:
            event(log, "files set aside: an earlier attempt stopped on them", files=sorted(progress.suspects))
        return progress

    def reading(self, key: str | None) -> None:
        """Before each file (None when done or failing in hand): where this attempt is, should it die here."""
        if not self.careful:
            return
        body = {"attempt": self.attempt, "reading": key, "suspects": self.suspects}
        try:
            self.client.put_object(Bucket=self.bucket, Key=self.key, Body=orjson.dumps(body))
        except Exception as exc:
            if key is not None:
                raise
            event(log, "progress note not cleared", logging.WARNING, error=str(exc))
