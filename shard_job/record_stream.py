"""Splitting a JSON document into its action records as its bytes arrive, in bounded memory.

The collection server writes an envelope `{"actions": [...]}`, one bare action object, or an
array of actions. Parsing a whole document at once costs tens of bytes of Python objects per
byte of input when records are tiny (`[{},{},...]`: a 31 KB gzip, 32 MB inflated, peaked at
8.9 GB). Here a vectorised scan finds the document's top-level structure chunk by chunk and
hands out each record's own bytes for orjson to parse alone. Memory is one chunk, one record
(at most `max_record_bytes`) and the envelope's other fields (at most the same), whatever the
file holds.

The scan follows strings and escapes (an unescaped quote toggles "inside a string"; brackets,
braces and commas count only outside strings), so records are delimited without being parsed.
A record that is not valid JSON is that record's problem; a document whose structure is broken
(truncated, unbalanced, trailing data) is the file's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

_QUOTE, _BACKSLASH, _OPEN, _CLOSE, _COMMA = 1, 2, 3, 4, 5
_CLASSES = np.zeros(256, dtype=np.int8)
_CLASSES[ord('"')] = _QUOTE
_CLASSES[ord("\\")] = _BACKSLASH
_CLASSES[[ord("{"), ord("[")]] = _OPEN
_CLASSES[[ord("}"), ord("]")]] = _CLOSE
_CLASSES[ord(",")] = _COMMA
_WHITESPACE = b" \t\r\n"
_UTF8_BOM = b"\xef\xbb\xbf"
_MEMBER_KEY_BYTES = 4096  # an envelope member's key and colon; longer is not an envelope we read
_MEMBER_KEY = re.compile(rb'^[\s,{]*("(?:[^"\\]|\\.)*")\s*:\s*$', re.DOTALL)
_JSON_POSITION = re.compile(r": line \d+ column \d+ \(char \d+\)$")

_START, _SCALAR, _ARRAY, _OBJECT, _ACTIONS, _END = range(6)


class DocumentError(Exception):
    """The document's structure is broken; the whole file is rejected with this reason."""


class TooManyRecords(Exception):
    """More records than the limit: raised as soon as one more is found, whatever the chunk holds."""


@dataclass(frozen=True, slots=True)
class Element:
    """One record's bytes; only its first `max_record_bytes` when it is larger (then `size` says how large)."""

    data: bytes
    size: int

    @property
    def oversized(self) -> bool:
        return self.size > len(self.data)


def json_error(exc: Exception) -> str:
    """orjson's message without its position, so equal faults give equal reasons."""
    return _JSON_POSITION.sub("", str(exc))


class RecordSplitter:
    """feed(chunk) -> the records completed in it; finish() -> the rest, after checking the document's end.

    Records are the elements of a top-level array, of the envelope's "actions" array, or the
    one bare object. `envelope` holds the envelope's other fields once finished (None when
    there is no envelope or its fields were too large to keep).
    """

    def __init__(self, max_record_bytes: int, max_records: int | None = None) -> None:
        self.max_record_bytes = max_record_bytes
        self.max_records = max_records
        self._records = 0
        self.envelope: dict[str, Any] | None = None
        self._mode = _START
        self._depth = 0
        self._in_string = False
        self._escape_next = False  # the last chunk ended in an odd run of backslashes
        self._record = bytearray()  # the unfinished record's bytes from earlier chunks (capped)
        self._record_size = 0
        self._elements_in_array = 0
        self._rest = bytearray()  # top-level object bytes outside the actions array (capped)
        self._rest_size = 0
        self._member = bytearray()  # the current envelope member's bytes, for its key (capped)
        self._has_actions = False
        self._first_byte = b""

    # -- the scan -------------------------------------------------------------------------

    def _escaped(self, quotes: np.ndarray, backslashes: np.ndarray) -> np.ndarray:
        """Which quotes follow an odd run of backslashes (counting one carried from the last chunk)."""
        escaped = np.zeros(len(quotes), dtype=bool)
        carried = self._escape_next
        self._escape_next = False
        if len(backslashes):
            starts = np.flatnonzero(np.r_[True, backslashes[1:] != backslashes[:-1] + 1])
            run_start = backslashes[starts]
            run_end = backslashes[np.r_[starts[1:] - 1, len(backslashes) - 1]]
            run_odd = (run_end - run_start + 1) % 2 == 1
            if carried and run_start[0] == 0:
                run_odd[0] = not run_odd[0]
                carried = False
            at = np.minimum(np.searchsorted(run_end, quotes - 1), len(run_end) - 1)
            escaped = (run_end[at] == quotes - 1) & run_odd[at]
            self._escape_next = bool(run_odd[-1]) and self._chunk_end == int(run_end[-1]) + 1
        if carried and len(quotes) and quotes[0] == 0:
            escaped[0] = True
        return escaped

    def _structure(self, data: bytes) -> tuple[list[int], list[int], list[int]]:
        """Position, class and depth before each structural character outside strings that the mode needs."""
        codes = _CLASSES[np.frombuffer(data, dtype=np.uint8)]
        pos = np.flatnonzero(codes)
        cls = codes[pos]
        self._chunk_end = len(data)
        is_quote = cls == _QUOTE
        backslashes = pos[cls == _BACKSLASH]
        if len(backslashes) or self._escape_next:
            quote_at = np.flatnonzero(is_quote)
            is_quote[quote_at[self._escaped(pos[quote_at], backslashes)]] = False
        quotes_before = np.cumsum(is_quote, dtype=np.int64) - is_quote
        outside = (quotes_before + self._in_string) % 2 == 0
        self._in_string = bool((int(is_quote.sum()) + self._in_string) % 2)
        keep = outside & (cls >= _OPEN)
        pos, cls = pos[keep], cls[keep]
        delta = np.where(cls == _OPEN, 1, np.where(cls == _CLOSE, -1, 0)).astype(np.int64)
        depth_before = self._depth + np.cumsum(delta) - delta
        if len(delta):
            self._depth = int(depth_before[-1] + delta[-1])
        if self._mode == _ARRAY:  # elements at depth 1
            wanted = ((cls == _OPEN) & (depth_before == 0)) | ((cls != _OPEN) & (depth_before <= 1))
        else:  # members at depth 1, actions at depth 2
            wanted = ((cls == _OPEN) & (depth_before <= 1)) | ((cls != _OPEN) & (depth_before <= 2))
        return pos[wanted].tolist(), cls[wanted].tolist(), depth_before[wanted].tolist()

    # -- buffers ---------------------------------------------------------------------------

    def _keep_record(self, piece: bytes | memoryview) -> None:
        room = self.max_record_bytes - len(self._record)
        if room > 0:
            self._record += piece[:room]
        self._record_size += len(piece)

    def _take_record(self, data: bytes, start: int, end: int) -> Element | None:
        """The record ending at `end`; None for the whitespace of an empty array."""
        if self._record_size:
            self._keep_record(memoryview(data)[start:end])
            element = Element(bytes(self._record), self._record_size)
            self._record.clear()
            self._record_size = 0
        else:
            size = end - start
            element = Element(data[start : start + min(size, self.max_record_bytes)], size)
        return element

    def _keep_rest(self, piece: bytes | memoryview) -> None:
        room = self.max_record_bytes - len(self._rest)
        if room > 0:
            self._rest += piece[:room]
        self._rest_size += len(piece)
        member_room = _MEMBER_KEY_BYTES + 1 - len(self._member)
        if member_room > 0:
            self._member += piece[:member_room]

    # -- feeding ---------------------------------------------------------------------------

    def feed(self, data: bytes) -> list[Element]:
        out: list[Element] = []
        if not data:
            return out
        if self._mode == _START:
            data = self._start(data)
            if not data:
                return out
        if self._mode == _SCALAR:
            self._keep_rest(data)
            return out
        if self._mode == _END:
            self._check_trailing(data)
            return out
        positions, classes, depths = self._structure(data)
        view = memoryview(data)
        record_at = 0 if self._mode in (_ARRAY, _ACTIONS) else None
        rest_at = 0 if self._mode == _OBJECT else None
        for p, c, d in zip(positions, classes, depths, strict=True):
            if c == _CLOSE and d <= 0:
                raise DocumentError("not JSON: a closing bracket without an opening one")
            if self._mode == _ARRAY:
                if c == _OPEN:  # the array's own bracket
                    record_at = p + 1
                    continue
                element = self._take_record(data, record_at, p)  # type: ignore[arg-type]
                self._add_element(out, element, closing=c == _CLOSE)
                if c == _CLOSE:
                    self._expect(data, p, b"]")
                    self._mode = _END
                    self._check_trailing(data[p + 1 :])
                    return out
                record_at = p + 1
            elif self._mode == _OBJECT:
                if c == _OPEN and d == 0:
                    rest_at = p
                elif c == _COMMA and d == 1:
                    self._keep_rest(view[rest_at:p])
                    rest_at = p
                    self._member.clear()
                elif c == _OPEN and d == 1 and data[p : p + 1] == b"[":
                    self._keep_rest(view[rest_at:p])
                    rest_at = p
                    if self._member_is_actions():
                        if self._has_actions:
                            raise DocumentError('not JSON: the envelope has two "actions" arrays')
                        self._keep_rest(b"[]")  # the envelope's other fields stay valid JSON
                        self._has_actions = True
                        self._mode = _ACTIONS
                        self._elements_in_array = 0
                        record_at, rest_at = p + 1, None
                elif c == _CLOSE and d == 1:
                    self._expect(data, p, b"}")
                    self._keep_rest(view[rest_at : p + 1])
                    self._mode = _END
                    self._check_trailing(data[p + 1 :])
                    return out
            else:  # inside the envelope's actions array
                if c == _OPEN or d != 2:
                    continue
                element = self._take_record(data, record_at, p)  # type: ignore[arg-type]
                self._add_element(out, element, closing=c == _CLOSE)
                record_at = p + 1
                if c == _CLOSE:
                    self._expect(data, p, b"]")
                    self._mode = _OBJECT
                    record_at, rest_at = None, p + 1
                    self._member.clear()
        if record_at is not None:
            self._keep_record(view[record_at:])
        if rest_at is not None:
            self._keep_rest(view[rest_at:])
        return out

    def _start(self, data: bytes) -> bytes:
        if not self._first_byte and data.startswith(_UTF8_BOM):
            data = data[len(_UTF8_BOM) :]
        stripped = data.lstrip(_WHITESPACE)
        if not stripped:
            return b""
        self._first_byte = stripped[:1]
        self._mode = {b"[": _ARRAY, b"{": _OBJECT}.get(self._first_byte, _SCALAR)
        return stripped

    def _add_element(self, out: list[Element], element: Element, *, closing: bool) -> None:
        """A lone whitespace element before the closing bracket is an empty array, not a record."""
        if closing and self._elements_in_array == 0 and not element.oversized and not element.data.strip():
            return
        self._elements_in_array += 1
        self._records += 1
        if self.max_records is not None and self._records > self.max_records:
            raise TooManyRecords(f"more than {self.max_records} records in one file")
        out.append(element)

    def _member_is_actions(self) -> bool:
        if len(self._member) > _MEMBER_KEY_BYTES:
            return False
        match = _MEMBER_KEY.match(bytes(self._member))
        if match is None:
            return False
        try:
            return orjson.loads(match.group(1)) == "actions"
        except orjson.JSONDecodeError:
            return False

    @staticmethod
    def _expect(data: bytes, at: int, closer: bytes) -> None:
        if data[at : at + 1] != closer:
            raise DocumentError(f"not JSON: mismatched brackets ({data[at : at + 1].decode()!r} closes a {closer!r})")

    def _check_trailing(self, data: bytes) -> None:
        extra = data.strip(_WHITESPACE + b"\x00")
        if extra:
            if extra[:1] in (b"{", b"[") and self._first_byte in (b"{", b"["):
                raise DocumentError(
                    "not JSON: looks like JSON Lines (one document per line); expected one JSON document"
                )
            raise DocumentError("not JSON: trailing data after the JSON document")

    # -- the end ---------------------------------------------------------------------------

    def finish(self) -> list[Element]:
        """Records only the end can give (a bare object); raises DocumentError when the document is broken."""
        if self._mode == _START:
            raise DocumentError("empty file")
        if self._mode == _SCALAR:
            return self._finish_scalar()
        if self._mode != _END:
            raise DocumentError("not JSON: the document ends before its brackets close (truncated?)")
        if self._first_byte != b"{":
            return []
        rest = Element(bytes(self._rest), self._rest_size)
        fields = _loads_object(rest)
        if self._has_actions:
            # the envelope's other fields must be JSON too (when they fit to be checked)
            if fields is None and not rest.oversized:
                raise DocumentError("not JSON: the envelope around the actions array is malformed")
            self.envelope = fields
            return []
        if fields is not None and "actions" in fields:
            got = type(fields["actions"]).__name__
            reason = "its key is not next to its array" if got == "list" else f"it is a {got}"
            raise DocumentError(f'envelope "actions" cannot be read as an array of records ({reason})')
        return [rest]

    def _finish_scalar(self) -> list[Element]:
        if self._rest_size > len(self._rest):
            raise DocumentError("not JSON: the document is not an object or array")
        try:
            value = orjson.loads(bytes(self._rest))
        except orjson.JSONDecodeError as exc:
            raise DocumentError(f"not JSON: {json_error(exc)}") from None
        raise DocumentError(f"JSON document is not an object or array (got {type(value).__name__})")


def _loads_object(element: Element) -> dict[str, Any] | None:
    if element.oversized:
        return None
    try:
        value = orjson.loads(element.data)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None
