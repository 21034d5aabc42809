"""Hostile input: every file and record is accepted or rejected with a reason, never a crash."""

from __future__ import annotations

import gzip
import hashlib
import io
import json

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shard_job.read_shard import ShardInput, add_file
from witple_batch.actions import Action, validate
from witple_batch.input_files import FileRejected, parse_file
from witple_batch.partials import PartialError, decode_partial, parse_success, verify_checksum
from witple_batch.run_layout import InputFile

LIMIT = 1 << 20
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=6),
    max_leaves=20,
)
id_like = st.one_of(
    st.text(max_size=300), st.integers(), st.none(), st.booleans(), st.floats(), st.lists(st.integers())
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "user_id",
                "place_id",
                "place_category",
                "action_type",
                "timestamp",
                "server_timestamp",
                "server_received_at",
                "extra",
            ]
        ),
        id_like,
    )
)
def test_the_validator_never_raises(record: dict) -> None:
    result = validate(record)
    assert isinstance(result, Action | str)
    if isinstance(result, Action):
        for value in (result.user_id, result.place_id, result.place_category):
            assert value and len(value) <= 256 and value == value.strip()


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000))
def test_the_parser_never_raises_on_any_bytes(data: bytes) -> None:
    for body in (data, gzip.compress(data)):
        try:
            parsed = parse_file(body, LIMIT)
        except FileRejected as exc:
            assert str(exc)
        else:
            assert isinstance(parsed.records, list)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(json_values, max_size=30))
def test_every_record_is_accounted_for(records: list) -> None:
    shard = ShardInput()
    add_file(shard, InputFile("k", 1, "e"), orjson.dumps({"actions": records}), LIMIT)
    assert shard.records_read == len(records)
    assert shard.records_read == shard.records_accepted + shard.records_rejected
    assert len(shard.rejects) == shard.records_rejected


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (gzip.compress(b"[" + b"0," * (3 * LIMIT) + b"0]"), "exceeds the"),  # gzip bomb
        (b'{"actions": [' + b'{"a":' * 2000 + b"1" + b"}" * 2000 + b"]}", "not JSON"),  # deeply nested
        (b'[{"user_id": NaN}]', "not JSON"),
        (b'[{"user_id": Infinity}]', "not JSON"),
        (b'{"user_id": "a"}\n{"user_id": "b"}', "JSON Lines"),
        (b"\xff\xfe[]", "invalid UTF-8"),
    ],
)
def test_hostile_files_are_rejected_with_a_specific_reason(body: bytes, reason: str) -> None:
    shard = ShardInput()
    add_file(shard, InputFile("k", len(body), "e"), body, LIMIT)
    assert shard.files_rejected == 1
    assert reason in shard.files[0]["reason"]


def test_a_huge_single_line_file_is_parsed_within_the_cap() -> None:
    action = {"user_id": "u", "place_id": "p", "place_category": "nature", "action_type": "click"}
    body = orjson.dumps([action] * 70_000)  # ~5 MB on one line
    shard = ShardInput()
    add_file(shard, InputFile("k", len(body), "e"), body, 64 * LIMIT)
    assert shard.records_accepted == 70_000


def test_a_50_mb_single_line_record_is_rejected_not_fatal() -> None:
    action = {"user_id": "x" * (50 * LIMIT), "place_id": "p", "place_category": "nature", "action_type": "click"}
    body = orjson.dumps({"actions": [action, {**action, "user_id": "ok"}]})
    assert len(body) > 50 * LIMIT and b"\n" not in body
    shard = ShardInput()
    add_file(shard, InputFile("big", len(body), "e"), body, 64 * LIMIT)
    assert (shard.records_accepted, shard.records_rejected) == (1, 1)
    assert shard.rejects[0]["reason"] == "user_id is longer than 256 characters"
    assert len(shard.rejects[0]["raw"]) <= 1000


def test_hostile_values_are_rejected_or_kept_verbatim() -> None:
    base = {"user_id": "u", "place_id": "p", "place_category": "nature", "action_type": "click"}
    records = [
        {**base, "user_id": 10**40},  # huge integer: orjson reads it as a float
        {**base, "place_id": "a\x00b"},  # NUL
        {**base, "user_id": "\u202egnp.exe"},  # bidi override: not a control character, kept
        {**base, "place_category": "x'); DROP TABLE place_vectors; --"},  # SQL-looking: data
        {**base, "action_type": "LIKE", "user_id": "dup", **{"user_id": "dup2"}},  # duplicate key: last wins
    ]
    shard = ShardInput()
    body = b'[{"user_id": "a", "user_id": "b", "place_id": "p", "place_category": "c", "action_type": "click"}]'
    add_file(shard, InputFile("dupkeys", len(body), "e"), body, LIMIT)
    add_file(shard, InputFile("k", 1, "e"), json.dumps(records).encode(), LIMIT)
    reasons = [r["reason"] for r in shard.rejects]
    assert reasons == ["user_id must be a string or an integer, got float", "place_id contains control characters"]
    assert set(shard.columns.user_codes) == {"b", "\u202egnp.exe", "u", "dup2"}
    assert ("x'); DROP TABLE place_vectors; --", "p") in shard.columns.place_codes


def _npy(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


def test_a_marker_that_does_not_say_what_made_its_vectors_is_refused() -> None:
    marker = {"format": "witple-partial-v2", "files": {}, "place_text_version": "place-text-v1"}
    with pytest.raises(PartialError, match="does not say which model and place text made its vectors"):
        parse_success(orjson.dumps(marker), "shard 2")
    older = {**marker, "format": "witple-partial-v1", "content_model": "0" * 64}
    with pytest.raises(PartialError, match="is not a witple-partial-v2 marker"):
        parse_success(orjson.dumps(older), "shard 2")


def test_tampered_arrays_are_refused() -> None:
    marker = {
        "format": "witple-partial-v2",
        "files": {"users.ids.npy": hashlib.sha256(b"original").hexdigest()},
        "content_model": "0" * 64,
        "place_text_version": "place-text-v1",
    }
    with pytest.raises(PartialError, match=r"checksum mismatch for users\.ids\.npy"):
        verify_checksum("users.ids.npy", b"changed", marker, "shard 3")
    pickled = {"users.ids.npy": _npy(np.array(["a", 1], dtype=object), allow_pickle=True)}
    with pytest.raises(PartialError, match="cannot be loaded without pickle"):
        decode_partial(pickled, marker, "shard 0")
    wrong_kind = {"users.ids.npy": _npy(np.zeros((2, 2)))}
    with pytest.raises(PartialError, match=r"users\.ids has dtype float64"):
        decode_partial(wrong_kind, marker, "shard 0")
