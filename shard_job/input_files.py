"""Turning one S3 object's bytes into action records, with the cost of a file bounded by its limits.

Gzip is recognised by its magic bytes, whatever ContentEncoding or the key say (the collection
server gzips `.json` keys; a wrong header must not lose a file), and inflated one chunk at a
time. Records are split out of the document as the chunks arrive (record_stream) and parsed
one at a time, so memory holds one chunk and one record, never the inflated file. A file that
is malformed is rejected; a file over a limit (inflated bytes, records) is quarantined: it is
set aside, not judged, until an operator raises the limit and releases it.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from shard_job.record_stream import DocumentError, Element, RecordSplitter, TooManyRecords, json_error

GZIP_MAGIC = b"\x1f\x8b"
CHUNK_BYTES = 1 << 18  # one chunk's scan holds a few Python ints per structural byte: keep it small
RAW_SAMPLE_BYTES = 1000
MAX_GZIP_MEMBERS = 10_000  # empty members inflate to nothing: count them, or a file of them never ends


class FileRejected(Exception):
    """The whole file cannot be read; its reason goes to the rejects file and the ledger."""


class FileQuarantined(FileRejected):
    """The file is over a limit; the ledger sets it aside until an operator releases it."""


@dataclass(frozen=True)
class InputLimits:
    max_object_bytes: int  # listed size, checked before the GET
    max_decompressed_bytes: int
    max_records: int
    max_record_bytes: int
    max_seconds: float = 300.0  # one file's reading time: a slow file is quarantined, not the attempt lost

    def check_listed_size(self, size: int) -> None:
        if size > self.max_object_bytes:
            raise FileQuarantined(f"object size {size} exceeds the {self.max_object_bytes}-byte limit (not read)")


@dataclass(frozen=True, slots=True)
class Record:
    """One element of the document: its value, or why it cannot be a record; `raw` is its first bytes."""

    value: Any
    error: str | None
    raw: bytes


def _inflate(data: bytes, limit: int) -> Iterator[bytes]:
    """Every gzip member, one chunk at a time, quarantining the file past `limit` inflated bytes.

    The input is walked by offset in bounded slices, so a file of many tiny members costs time
    linear in its size (slicing off the rest after every member was quadratic).
    """
    view = memoryview(data)
    position = 0
    total = 0
    members = 0
    while position < len(data):
        if members >= MAX_GZIP_MEMBERS:
            raise FileQuarantined(f"more than {MAX_GZIP_MEMBERS} gzip members")
        members += 1
        inflater = zlib.decompressobj(wbits=31)
        while not inflater.eof:
            window = view[position : position + CHUNK_BYTES]
            if not window:
                raise FileRejected("bad gzip data: truncated stream")
            try:
                chunk = inflater.decompress(window, CHUNK_BYTES)
            except zlib.error as exc:
                raise FileRejected(f"bad gzip data: {exc}") from None
            position += len(window) - len(inflater.unconsumed_tail) - len(inflater.unused_data)
            total += len(chunk)
            if total > limit:
                raise FileQuarantined(f"decompressed size exceeds the {limit}-byte limit (gzip bomb?)")
            if chunk:
                yield chunk
        # concatenated members are legal gzip; trailing zero padding is not a member
        if not data.startswith(GZIP_MAGIC, position):
            if bytes(view[position:]).strip(b"\x00"):
                raise FileRejected("bad gzip data: trailing garbage after the last member")
            break


def _plain(data: bytes, limit: int) -> Iterator[bytes]:
    if len(data) > limit:
        raise FileQuarantined(f"file size exceeds the {limit}-byte limit")
    for start in range(0, len(data), CHUNK_BYTES):
        yield data[start : start + CHUNK_BYTES]


def _record(element: Element, max_record_bytes: int) -> Record:
    raw = element.data[:RAW_SAMPLE_BYTES]
    if element.oversized:
        return Record(None, f"record is larger than {max_record_bytes} bytes", raw)
    if not element.data.strip():
        return Record(None, "record is empty (a stray comma?)", raw)
    try:
        return Record(orjson.loads(element.data), None, raw)
    except orjson.JSONDecodeError as exc:
        return Record(None, f"record is not valid JSON: {json_error(exc)}", raw)


class FileReader:
    """records() yields every element of one file; the attributes hold what the file said about itself."""

    def __init__(self, data: bytes, limits: InputLimits) -> None:
        self._data = data
        self._limits = limits
        self.gzipped = data.startswith(GZIP_MAGIC)
        self.decompressed_bytes = 0
        self.envelope: dict[str, Any] | None = None

    def records(self) -> Iterator[Record]:
        """Raises FileRejected (malformed) or FileQuarantined (over a limit) when the file cannot be taken whole."""
        limits = self._limits
        splitter = RecordSplitter(limits.max_record_bytes, limits.max_records)
        chunks = (_inflate if self.gzipped else _plain)(self._data, limits.max_decompressed_bytes)
        deadline = time.monotonic() + limits.max_seconds
        try:
            for chunk in chunks:
                self.decompressed_bytes += len(chunk)
                for element in splitter.feed(chunk):
                    yield _record(element, limits.max_record_bytes)
                if time.monotonic() > deadline:
                    raise FileQuarantined(f"reading it took more than {limits.max_seconds:.0f} s")
            for element in splitter.finish():
                yield _record(element, limits.max_record_bytes)
        except TooManyRecords as exc:
            raise FileQuarantined(str(exc)) from None
        except DocumentError as exc:
            raise FileRejected(str(exc)) from None
        self.envelope = splitter.envelope
