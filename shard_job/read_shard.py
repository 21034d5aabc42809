"""Reading a shard's files into action columns, with every record accounted for.

Memory per file is bounded by its limits, whatever it holds: records are parsed one at a time
(input_files); a file's accepted actions wait in a list of at most MAX_RECORDS_PER_FILE until
the file has been read to its end (a file that turns out malformed or over a limit adds
nothing); rejects go straight to a gzip file on disk, per file the first REJECT_SAMPLES raw
records and the counts by reason. What stays in memory per file is one row of files.json.

Memory per shard is bounded by its caps, whatever the files' names claim or the listing's byte
counts allow (gzip inflates): MAX_ACTIONS_PER_SHARD accepted actions (lower when the plan gives
the shard its share of the run's action cap, which the names alone cannot hold a run to) and
MAX_PLACES_PER_SHARD distinct places (each a content vector, text and hash downstream). The file
that would take the shard past either, and every file after it, is deferred to the next plan
(left out of the ledger, as a file changed after planning); a shard always takes its first
file, so the backlog drains. Through the whole child an action costs at most ~1.2 KB when every
user id is new and 256 characters long, a new place ~5 KB, ~110 B per action when ids repeat
(`benchmarks.scale shard-caps`): about 2.2 GB at worst at the defaults (1,000,000 and 250,000),
within the shard's 4 GiB (deploy/stack.yaml).
"""

from __future__ import annotations

import gzip
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

import orjson

from shard_job.actions import Action, has_control_characters, validate
from shard_job.aggregate import ActionColumns
from shard_job.fetch import ObjectGone
from shard_job.input_files import FileQuarantined, FileReader, FileRejected, InputLimits
from witple_batch.run_layout import InputFile
from witple_batch.run_state import FileStatus

REJECT_SAMPLES = 20
ENVELOPE_ID_CHARS = 256


class RejectsFile:
    """rejects.jsonl.gz, written as files finish: on disk, never in memory.

    gzip with no name and mtime 0, so a rerun on the same input writes the same bytes.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._raw: BinaryIO = path.open("wb")
        self._gzip = gzip.GzipFile(filename="", mode="wb", fileobj=self._raw, compresslevel=6, mtime=0)

    def write(self, row: dict[str, Any]) -> None:
        self._gzip.write(orjson.dumps(row) + b"\n")

    def close(self) -> None:
        if not self._gzip.closed:
            self._gzip.close()
            self._raw.close()

    def __enter__(self) -> RejectsFile:
        return self

    def __exit__(self, *_exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()


@dataclass(frozen=True)
class ShardFull:
    """The shard is at one of its caps (actions, places): this file and the rest wait for the next plan."""

    reason: str


@dataclass
class ShardInput:
    rejects: RejectsFile
    max_actions: int
    max_places: int  # distinct places: each costs a content vector and its text downstream
    columns: ActionColumns = field(default_factory=ActionColumns)
    files: list[dict[str, Any]] = field(default_factory=list)
    records_read: int = 0
    records_rejected: int = 0
    files_rejected: int = 0
    files_quarantined: int = 0
    files_deferred: int = 0
    decompressed_bytes: int = 0
    full: bool = False  # a file did not fit under max_actions or max_places: the rest of the plan waits too

    @property
    def records_accepted(self) -> int:
        return len(self.columns)


def _file_row(item: InputFile) -> dict[str, Any]:
    return {"key": item.key, "etag": item.etag, "size": item.size}


def set_aside(shard: ShardInput, item: InputFile, exc: FileRejected | ObjectGone | ShardFull) -> None:
    """The whole file is out: quarantined (over a limit, or it stopped a child), rejected (malformed)
    or deferred (changed or deleted after planning, or the shard is full: left out of the ledger
    for the next plan)."""
    if isinstance(exc, (ObjectGone, ShardFull)):
        status, reason = FileStatus.DEFERRED, exc.reason
        shard.files_deferred += 1
    elif isinstance(exc, FileQuarantined):
        status, reason = FileStatus.QUARANTINED, str(exc)
        shard.files_quarantined += 1
    else:
        status, reason = FileStatus.REJECTED, str(exc)
        shard.files_rejected += 1
    shard.rejects.write({"key": item.key, "status": status.value, "record_index": None, "reason": reason, "raw": None})
    shard.files.append(
        {
            **_file_row(item),
            "status": status.value,
            "reason": reason,
            "records": 0,
            "accepted": 0,
            "rejected": 0,
            "rejects_by_reason": {},
            "envelope_batch_id": None,
        }
    )


def _past_caps(shard: ShardInput, accepted: list[Action]) -> bool:
    """Whether a file's accepted actions would take the shard past max_actions or max_places."""
    if len(shard.columns) + len(accepted) > shard.max_actions:
        return True
    known = shard.columns.place_codes
    new_places = {key for action in accepted if (key := (action.place_category, action.place_id)) not in known}
    return len(known) + len(new_places) > shard.max_places


def defer(shard: ShardInput, items: list[InputFile]) -> None:
    """Files a full shard leaves to the next plan (read, or never fetched)."""
    full = ShardFull(
        f"the shard holds {len(shard.columns):,} accepted actions on {len(shard.columns.place_codes):,} places,"
        f" its caps {shard.max_actions:,} (MAX_ACTIONS_PER_SHARD, or its share of the run's action cap) and"
        f" {shard.max_places:,} (MAX_PLACES_PER_SHARD); left to the next plan"
    )
    for item in items:
        set_aside(shard, item, full)


def _envelope_batch_id(envelope: dict[str, Any] | None) -> str | None:
    """The collection server's batch_id: the main server marks its own rows processed by it.

    None, as for a file without one, when it is not an id: not a string or integer, empty, longer
    than ENVELOPE_ID_CHARS or holding a control character (a NUL would stop the reduce's staging).
    The file's actions are kept either way; only the id is left out of the report and the notice.
    """
    value = (envelope or {}).get("batch_id")
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not 0 < len(value) <= ENVELOPE_ID_CHARS or has_control_characters(value):
        return None
    return value


def add_file(shard: ShardInput, item: InputFile, data: bytes, limits: InputLimits, planned_us: int) -> None:
    """Parse, validate and add one file; a bad record or file is rejected, never raised; a file
    that would take a shard holding actions past max_actions or max_places is deferred, and every
    file after it."""
    if shard.full:
        defer(shard, [item])
        return
    reader = FileReader(data, limits)
    accepted: list[Action] = []
    by_reason: Counter[str] = Counter()
    samples: list[dict[str, Any]] = []
    read = 0
    try:
        for index, record in enumerate(reader.records()):
            read = index + 1
            result = record.error or validate(record.value, planned_us)
            if isinstance(result, Action):
                accepted.append(result)
                continue
            by_reason[result] += 1
            if len(samples) < REJECT_SAMPLES:
                raw = record.raw.decode("utf-8", errors="replace")
                samples.append({"key": item.key, "record_index": index, "reason": result, "raw": raw})
    except FileRejected as exc:
        set_aside(shard, item, exc)
        return
    if len(shard.columns) and _past_caps(shard, accepted):
        shard.full = True
        defer(shard, [item])
        return
    for action in accepted:
        shard.columns.add(action)
    rejected = sum(by_reason.values())
    for sample in samples:
        shard.rejects.write(sample)
    if rejected:
        shard.rejects.write({"key": item.key, "rejected": rejected, "by_reason": dict(sorted(by_reason.items()))})
    shard.records_read += read
    shard.records_rejected += rejected
    shard.decompressed_bytes += reader.decompressed_bytes
    shard.files.append(
        {
            **_file_row(item),
            "status": FileStatus.PROCESSED.value,
            "reason": None,
            "records": read,
            "accepted": len(accepted),
            "rejected": rejected,
            "rejects_by_reason": dict(sorted(by_reason.items())),
            "envelope_batch_id": _envelope_batch_id(reader.envelope),
        }
    )
