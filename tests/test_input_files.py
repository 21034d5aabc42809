from __future__ import annotations

import gzip

import orjson
import pytest

from shard_job.input_files import FileQuarantined, FileReader, FileRejected, InputLimits

LIMIT = 1 << 20
LIMITS = InputLimits(max_object_bytes=LIMIT, max_decompressed_bytes=LIMIT, max_records=1000, max_record_bytes=4096)
ACTION = {"user_id": "u", "place_id": "p", "place_category": "nature", "action_type": "click"}


def values(body: bytes, limits: InputLimits = LIMITS) -> list:
    return [record.value for record in FileReader(body, limits).records()]


def test_envelope_bare_object_and_array() -> None:
    assert values(orjson.dumps({"count": 2, "actions": [ACTION, ACTION]})) == [ACTION, ACTION]
    assert values(orjson.dumps(ACTION)) == [ACTION]
    assert values(orjson.dumps([ACTION])) == [ACTION]


def test_the_envelope_batch_id_is_kept() -> None:
    reader = FileReader(orjson.dumps({"batch_id": "env-7", "server_info": {"a": [1]}, "actions": [ACTION]}), LIMITS)
    assert [r.value for r in reader.records()] == [ACTION]
    assert reader.envelope == {"batch_id": "env-7", "server_info": {"a": [1]}, "actions": []}


def test_gzip_is_found_by_magic_bytes_and_multi_member_works() -> None:
    body = gzip.compress(orjson.dumps([ACTION])[:10]) + gzip.compress(orjson.dumps([ACTION])[10:])
    reader = FileReader(body, LIMITS)
    assert [r.value for r in reader.records()] == [ACTION]
    assert reader.gzipped


def test_utf8_bom_is_tolerated() -> None:
    assert values(b"\xef\xbb\xbf" + orjson.dumps([ACTION])) == [ACTION]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "empty file"),
        (b"   \n", "empty file"),
        (b"{nope", "not JSON"),
        (b'{"a": 1}\n{"a": 2}\n', "looks like JSON Lines"),
        (gzip.compress(b"[1, 2, 3]", mtime=0)[:-8], "bad gzip data"),
        (b"\x1f\x8bnot really gzip", "bad gzip data"),
        (b'"just a string"', "not an object or array"),
        (b'{"actions": {"user_id": 1}}', r"cannot be read as an array of records \(it is a dict\)"),
        (b"[1, 2", "truncated"),
    ],
)
def test_undecodable_files_are_rejected_with_a_reason(body: bytes, reason: str) -> None:
    with pytest.raises(FileRejected, match=reason) as caught:
        values(body)
    assert not isinstance(caught.value, FileQuarantined)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"[NaN]", "record is not valid JSON: unexpected character"),
        (b"[1e400]", "record is not valid JSON: number is infinity"),
        (b'[{"user_id": "\xff\xfe"}]', "record is not valid JSON: str is not valid UTF-8"),
        (b'[{"a": "\\ud800"}]', "record is not valid JSON"),
        (b"[" * 2000 + b"]" * 2000, "record is not valid JSON: depth limit exceeded"),
        (b"[1,,2]", "record is empty"),
    ],
)
def test_a_bad_record_is_that_record_s_problem(body: bytes, reason: str) -> None:
    errors = [r.error for r in FileReader(body, LIMITS).records() if r.error]
    assert errors and errors[0].startswith(reason)


def test_gzip_bomb_is_quarantined_at_the_cap() -> None:
    bomb = gzip.compress(b"[" + b"0," * (25 * LIMIT) + b"0]")
    assert len(bomb) < LIMIT // 4
    with pytest.raises(FileQuarantined, match="exceeds the 1048576-byte limit"):
        values(bomb, InputLimits(LIMIT, LIMIT, 10**9, 4096))


def test_plain_file_over_the_cap_is_quarantined() -> None:
    with pytest.raises(FileQuarantined, match="file size exceeds"):
        values(b"[" + b" " * LIMIT + b"]")


def test_too_many_records_is_quarantined_without_reading_on() -> None:
    body = gzip.compress(b"[" + b"{}," * 5_000_000 + b"{}]")
    reader = FileReader(body, InputLimits(LIMIT, 1 << 30, 1000, 4096))
    with pytest.raises(FileQuarantined, match="more than 1000 records"):
        list(reader.records())
    assert reader.decompressed_bytes < 2 * LIMIT  # stopped at the cap, not at the end of 15 MB


def test_a_listed_size_over_the_cap_is_refused_before_reading() -> None:
    with pytest.raises(FileQuarantined, match="not read"):
        LIMITS.check_listed_size(LIMIT + 1)
    LIMITS.check_listed_size(LIMIT)


def test_many_gzip_members_cost_linear_time_and_are_capped() -> None:
    member = gzip.compress(b"")
    with pytest.raises(FileQuarantined, match="more than 10000 gzip members"):
        values(member * 200_000)  # 4 MB of empty members: walked by offset, stopped at the cap
    assert values(b"".join(gzip.compress(b" ") for _ in range(5000)) + gzip.compress(b"[]")) == []


def test_a_file_that_reads_too_slowly_is_quarantined() -> None:
    body = gzip.compress(b"[" + b"{}," * 300_000 + b"{}]")
    with pytest.raises(FileQuarantined, match="reading it took more than 0 s"):
        values(body, InputLimits(LIMIT, 1 << 30, 10**7, 4096, max_seconds=0.0))
