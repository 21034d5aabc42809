"""Turning one S3 object's bytes into action records. Pure: never raises on any bytes.

Gzip is recognised by its magic bytes, whatever ContentEncoding or the key say (the
collection server gzips `.json` keys; a wrong header must not lose a file). Decompression
is capped against gzip bombs.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any

import orjson

GZIP_MAGIC = b"\x1f\x8b"
UTF8_BOM = b"\xef\xbb\xbf"
_CHUNK = 1 << 20


class FileRejected(Exception):
    """The whole file cannot be read; its reason goes to the rejects file."""


@dataclass
class ParsedFile:
    records: list[Any] = field(default_factory=list)
    decompressed_bytes: int = 0
    gzipped: bool = False


def gunzip_capped(data: bytes, limit: int) -> bytes:
    """Inflate every gzip member, refusing to produce more than `limit` bytes."""
    out = bytearray()
    rest = data
    while rest:
        inflater = zlib.decompressobj(wbits=31)
        try:
            while True:
                chunk = inflater.decompress(rest, _CHUNK)
                out += chunk
                if len(out) > limit:
                    raise FileRejected(f"decompressed size exceeds the {limit}-byte limit (gzip bomb?)")
                rest = inflater.unconsumed_tail
                if inflater.eof or (not chunk and not rest):
                    break
        except zlib.error as exc:
            raise FileRejected(f"bad gzip data: {exc}") from None
        if not inflater.eof:
            raise FileRejected("bad gzip data: truncated stream")
        rest = inflater.unused_data
        # concatenated members are legal gzip; trailing zero padding is not a member
        if rest and not rest.startswith(GZIP_MAGIC):
            if rest.strip(b"\x00"):
                raise FileRejected("bad gzip data: trailing garbage after the last member")
            break
    return bytes(out)


def _json_error(text: str, exc: Exception) -> FileRejected:
    first_line = text.split("\n", 1)[0]
    if "\n" in text.strip():
        try:
            orjson.loads(first_line)
            return FileRejected("not JSON: looks like JSON Lines (one document per line); expected one JSON document")
        except orjson.JSONDecodeError:
            pass
    return FileRejected(f"not JSON: {exc}")


def records_of(document: Any) -> list[Any]:
    """Envelope {"actions": [...]}, a bare action object, or an array of actions."""
    if isinstance(document, list):
        return document
    if isinstance(document, dict):
        if "actions" in document:
            actions = document["actions"]
            if not isinstance(actions, list):
                raise FileRejected(f'envelope "actions" is not an array (got {type(actions).__name__})')
            return actions
        return [document]
    raise FileRejected(f"JSON document is not an object or array (got {type(document).__name__})")


def parse_file(data: bytes, max_decompressed: int) -> ParsedFile:
    """Records of one file, or FileRejected with the reason."""
    parsed = ParsedFile()
    if data.startswith(GZIP_MAGIC):
        parsed.gzipped = True
        data = gunzip_capped(data, max_decompressed)
    elif len(data) > max_decompressed:
        raise FileRejected(f"file size exceeds the {max_decompressed}-byte limit")
    parsed.decompressed_bytes = len(data)
    if data.startswith(UTF8_BOM):
        data = data[len(UTF8_BOM) :]
    if not data.strip():
        raise FileRejected("empty file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FileRejected(f"invalid UTF-8 at byte {exc.start}") from None
    try:
        document = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise _json_error(text, exc) from None
    parsed.records = records_of(document)
    return parsed
