from __future__ import annotations

import gzip

import orjson
import pytest

from witple_batch.input_files import FileRejected, parse_file

LIMIT = 1 << 20
ACTION = {"user_id": "u", "place_id": "p", "place_category": "nature", "action_type": "click"}


def test_envelope_bare_object_and_array() -> None:
    assert parse_file(orjson.dumps({"count": 2, "actions": [ACTION, ACTION]}), LIMIT).records == [ACTION, ACTION]
    assert parse_file(orjson.dumps(ACTION), LIMIT).records == [ACTION]
    assert parse_file(orjson.dumps([ACTION]), LIMIT).records == [ACTION]


def test_gzip_is_found_by_magic_bytes_and_multi_member_works() -> None:
    body = gzip.compress(orjson.dumps([ACTION])[:10]) + gzip.compress(orjson.dumps([ACTION])[10:])
    parsed = parse_file(body, LIMIT)
    assert parsed.gzipped
    assert parsed.records == [ACTION]


def test_utf8_bom_is_tolerated() -> None:
    assert parse_file(b"\xef\xbb\xbf" + orjson.dumps([ACTION]), LIMIT).records == [ACTION]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "empty file"),
        (b"   \n", "empty file"),
        (b"{nope", "not JSON"),
        (b'{"a": 1}\n{"a": 2}\n', "looks like JSON Lines"),
        (b'[{"user_id": "\xff\xfe"}]', "invalid UTF-8 at byte"),
        (gzip.compress(b"[1, 2, 3]")[:-8], "bad gzip data"),
        (b"\x1f\x8bnot really gzip", "bad gzip data"),
        (b'"just a string"', "not an object or array"),
        (b'{"actions": {"user_id": 1}}', '"actions" is not an array'),
        (b"[NaN]", "not JSON"),
        (b"[" * 5000 + b"]" * 5000, "not JSON"),
    ],
)
def test_undecodable_files_are_rejected_with_a_reason(body: bytes, reason: str) -> None:
    with pytest.raises(FileRejected, match=reason):
        parse_file(body, LIMIT)


def test_gzip_bomb_stops_at_the_cap() -> None:
    bomb = gzip.compress(b"0" * (50 * LIMIT))
    assert len(bomb) < LIMIT // 4
    with pytest.raises(FileRejected, match="exceeds the 1048576-byte limit"):
        parse_file(bomb, LIMIT)


def test_plain_file_over_the_cap_is_rejected() -> None:
    with pytest.raises(FileRejected, match="file size exceeds"):
        parse_file(b"[" + b" " * LIMIT + b"]", LIMIT)
