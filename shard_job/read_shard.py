"""Reading a shard's files into action columns, with every record accounted for."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from witple_batch.actions import validate
from witple_batch.aggregate import ActionColumns
from witple_batch.input_files import FileRejected, parse_file
from witple_batch.run_layout import InputFile

RAW_RECORD_CHARS = 1000


@dataclass
class ShardInput:
    columns: ActionColumns = field(default_factory=ActionColumns)
    files: list[dict[str, Any]] = field(default_factory=list)
    rejects: list[dict[str, Any]] = field(default_factory=list)
    records_read: int = 0
    records_rejected: int = 0
    files_rejected: int = 0
    decompressed_bytes: int = 0

    @property
    def records_accepted(self) -> int:
        return len(self.columns)


def _raw(record: Any) -> str:
    try:
        text = orjson.dumps(record, option=orjson.OPT_NON_STR_KEYS).decode()
    except (TypeError, orjson.JSONEncodeError):
        text = repr(record)
    return text[:RAW_RECORD_CHARS]


def add_file(shard: ShardInput, item: InputFile, data: bytes, max_decompressed: int) -> None:
    """Parse, validate and add one file; a bad record or file is rejected, never raised."""
    row: dict[str, Any] = {"key": item.key, "etag": item.etag, "size": item.size}
    try:
        parsed = parse_file(data, max_decompressed)
    except FileRejected as exc:
        shard.files_rejected += 1
        shard.rejects.append({"key": item.key, "record_index": None, "reason": str(exc), "raw": None})
        shard.files.append(
            {**row, "status": "rejected", "reason": str(exc), "records": 0, "accepted": 0, "rejected": 0}
        )
        return
    accepted = rejected = 0
    for index, record in enumerate(parsed.records):
        result = validate(record)
        if isinstance(result, str):
            rejected += 1
            shard.rejects.append({"key": item.key, "record_index": index, "reason": result, "raw": _raw(record)})
        else:
            accepted += 1
            shard.columns.add(result)
    shard.records_read += len(parsed.records)
    shard.records_rejected += rejected
    shard.decompressed_bytes += parsed.decompressed_bytes
    shard.files.append(
        {
            **row,
            "status": "processed",
            "reason": None,
            "records": len(parsed.records),
            "accepted": accepted,
            "rejected": rejected,
        }
    )
