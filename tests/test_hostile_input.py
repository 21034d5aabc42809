"""Hostile input: every file and record is accepted or rejected with a reason, never a crash."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reduce_job.spool import NpyFile, download
from shard_job.actions import Action, validate
from shard_job.input_files import FileReader, FileRejected, InputLimits
from shard_job.read_shard import RejectsFile, ShardInput, add_file
from witple_batch.partials import PartialError, check_arrays, chunks, parse_success
from witple_batch.run_layout import InputFile
from witple_batch.signing import SignatureError, sign

LIMIT = 1 << 20
LIMITS = InputLimits(max_object_bytes=LIMIT, max_decompressed_bytes=LIMIT, max_records=100_000, max_record_bytes=LIMIT)
PLANNED_US = 1_737_000_000_000_000


@contextmanager
def shard_input(tmp_path: Path, max_actions: int = 10_000_000, max_places: int = 10_000_000) -> Iterator[ShardInput]:
    with RejectsFile(tmp_path / f"rejects-{uuid.uuid4().hex}.jsonl.gz") as rejects:
        yield ShardInput(rejects=rejects, max_actions=max_actions, max_places=max_places)


def rejects_of(shard: ShardInput) -> list[dict]:
    shard.rejects.close()
    with gzip.open(shard.rejects.path) as lines:
        return [json.loads(line) for line in lines]


def add(shard: ShardInput, key: str, body: bytes, limits: InputLimits = LIMITS) -> None:
    add_file(shard, InputFile(key, len(body), "e"), body, limits, PLANNED_US)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=6),
    max_leaves=20,
)
id_like = st.one_of(
    st.text(max_size=300), st.integers(), st.none(), st.booleans(), st.floats(), st.lists(st.integers())
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
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
    result = validate(record, PLANNED_US)
    assert isinstance(result, Action | str)
    if isinstance(result, Action):
        for value in (result.user_id, result.place_id, result.place_category):
            assert value and len(value) <= 256 and value == value.strip()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000))
def test_the_parser_never_raises_on_any_bytes(data: bytes) -> None:
    for body in (data, gzip.compress(data)):
        try:
            records = list(FileReader(body, LIMITS).records())
        except FileRejected as exc:
            assert str(exc)
        else:
            assert all((r.value is None) == (r.error is not None) or r.value is None for r in records)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(st.lists(json_values, max_size=30))
def test_every_record_is_accounted_for(tmp_path, records: list) -> None:
    with shard_input(tmp_path) as shard:
        add(shard, "k", orjson.dumps({"actions": records}))
        assert shard.records_read == len(records)
        assert shard.records_read == shard.records_accepted + shard.records_rejected
        rows = rejects_of(shard)
        samples = [r for r in rows if "record_index" in r]
        assert len(samples) == min(shard.records_rejected, 20)
        summary = [r for r in rows if "by_reason" in r]
        assert sum(sum(r["by_reason"].values()) for r in summary) == shard.records_rejected
        assert shard.files[0]["rejected"] == shard.records_rejected


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        (gzip.compress(b"[" + b" " * (3 * LIMIT) + b"]", mtime=0), "quarantined", "exceeds the"),  # gzip bomb
        (gzip.compress(b"[" + b"{}," * 200_000 + b"{}]", mtime=0), "quarantined", "more than 100000 records"),
        (b'{"user_id": "a"}\n{"user_id": "b"}', "rejected", "JSON Lines"),
        (b"\xff\xfe[]", "rejected", "not JSON"),
        (b'{"actions": [{"user_id": "a"}', "rejected", "truncated"),
    ],
)
def test_hostile_files_are_set_aside_with_a_specific_reason(tmp_path, body: bytes, status: str, reason: str) -> None:
    with shard_input(tmp_path) as shard:
        add(shard, "k", body)
        assert (shard.files_rejected, shard.files_quarantined) == ((1, 0) if status == "rejected" else (0, 1))
        assert shard.files[0]["status"] == status
        assert reason in shard.files[0]["reason"]
        assert shard.records_accepted == 0  # a file set aside adds nothing, not even its good records
        assert rejects_of(shard) == [
            {"key": "k", "status": status, "record_index": None, "reason": shard.files[0]["reason"], "raw": None}
        ]


@pytest.mark.parametrize(
    ("records", "reason"),
    [
        (b'[{"user_id": NaN, "place_id": "p"}', "record is not valid JSON"),
        (b'[{"user_id": Infinity}', "record is not valid JSON"),
        (
            b'[{"user_id": "\\ud800", "place_id": "p", "place_category": "c", "action_type": "click"}',
            "no low surrogate",
        ),
        (b"[" + b'{"a":' * 2000 + b"1" + b"}" * 2000, "depth limit exceeded"),
    ],
)
def test_a_hostile_record_is_rejected_and_its_neighbours_kept(tmp_path, records: bytes, reason: str) -> None:
    good = b'{"user_id": "u", "place_id": "p", "place_category": "c", "action_type": "click"}'
    with shard_input(tmp_path) as shard:
        add(shard, "k", records + b", " + good + b"]")
        assert (shard.records_accepted, shard.records_rejected) == (1, 1)
        (found,) = shard.files[0]["rejects_by_reason"]
        assert reason in found


def test_a_huge_single_line_file_is_parsed_within_the_cap(tmp_path) -> None:
    action = {"user_id": "u", "place_id": "p", "place_category": "nature", "action_type": "click"}
    body = orjson.dumps([action] * 70_000)  # ~5 MB on one line
    with shard_input(tmp_path) as shard:
        add(shard, "k", body, InputLimits(64 * LIMIT, 64 * LIMIT, 100_000, 65_536))
        assert shard.records_accepted == 70_000


def test_a_shard_stops_taking_files_at_its_action_cap_whatever_their_names_say(tmp_path) -> None:
    def body(count: int) -> bytes:
        action = {"place_id": "p", "place_category": "nature", "action_type": "click"}
        return orjson.dumps([{**action, "user_id": f"u{i}"} for i in range(count)])

    with shard_input(tmp_path, max_actions=100) as shard:
        add(shard, "batch-1-0-a.json", body(60))
        add(shard, "batch-2-0-b.json", body(50))  # past the cap: this file and every later one wait
        add(shard, "batch-3-0-c.json", body(10))  # would fit, but the oldest go first
        assert shard.records_accepted == 60
        assert [(f["key"], f["status"]) for f in shard.files] == [
            ("batch-1-0-a.json", "processed"),
            ("batch-2-0-b.json", "deferred"),
            ("batch-3-0-c.json", "deferred"),
        ]
        assert shard.files_deferred == 2 and "its caps 100 (MAX_ACTIONS_PER_SHARD" in shard.files[2]["reason"]
    with shard_input(tmp_path, max_actions=100) as shard:
        add(shard, "batch-1-0-a.json", body(150))  # a first file always goes in, so the backlog drains
        assert shard.records_accepted == 150


def test_a_shard_stops_taking_files_at_its_place_cap(tmp_path) -> None:
    def body(places: range) -> bytes:
        return orjson.dumps(
            [{"user_id": "u", "place_id": str(p), "place_category": "nature", "action_type": "click"} for p in places]
        )

    with shard_input(tmp_path, max_places=100) as shard:
        add(shard, "batch-1-0-a.json", body(range(0, 60)))
        add(shard, "batch-2-0-b.json", body(range(0, 60)))  # the same places: no new ones
        add(shard, "batch-3-0-c.json", body(range(60, 101)))  # 101 places: past the cap
        assert shard.records_accepted == 120
        assert [f["status"] for f in shard.files] == ["processed", "processed", "deferred"]
        assert "100 (MAX_PLACES_PER_SHARD)" in shard.files[2]["reason"]


def test_a_50_mb_single_line_record_is_rejected_not_fatal(tmp_path) -> None:
    action = {"user_id": "x" * (50 * LIMIT), "place_id": "p", "place_category": "nature", "action_type": "click"}
    body = orjson.dumps({"actions": [action, {**action, "user_id": "ok"}]})
    assert len(body) > 50 * LIMIT and b"\n" not in body
    with shard_input(tmp_path) as shard:
        add(shard, "big", body, InputLimits(64 * LIMIT, 64 * LIMIT, 100_000, 65_536))
        assert (shard.records_accepted, shard.records_rejected) == (1, 1)
        sample = rejects_of(shard)[0]
        assert sample["reason"] == "record is larger than 65536 bytes"
        assert len(sample["raw"]) <= 1000


def test_hostile_values_are_rejected_or_kept_verbatim(tmp_path) -> None:
    base = {"user_id": "u", "place_id": "p", "place_category": "nature", "action_type": "click"}
    records = [
        {**base, "user_id": 10**40},  # huge integer: orjson reads it as a float
        {**base, "place_id": "a\x00b"},  # NUL
        {**base, "user_id": "\u202egnp.exe"},  # bidi override: not a control character, kept
        {**base, "place_category": "x'); DROP TABLE place_vectors; --"},  # SQL-looking: data
        {**base, "action_type": "LIKE", "user_id": "dup", **{"user_id": "dup2"}},  # duplicate key: last wins
    ]
    body = b'[{"user_id": "a", "user_id": "b", "place_id": "p", "place_category": "c", "action_type": "click"}]'
    with shard_input(tmp_path) as shard:
        add(shard, "dupkeys", body)
        add(shard, "k", json.dumps(records).encode())
        reasons = [r["reason"] for r in rejects_of(shard) if "record_index" in r]
        assert reasons == ["user_id must be a string or an integer, got float", "place_id contains control characters"]
        assert set(shard.columns.user_codes) == {"b", "\u202egnp.exe", "u", "dup2"}
        assert ("x'); DROP TABLE place_vectors; --", "p") in shard.columns.place_codes


def _npy(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


def test_the_reduce_reads_npy_files_by_slices_and_refuses_what_np_load_would(tmp_path: Path) -> None:
    content = np.random.default_rng(3).standard_normal((1_000, 384)).astype(np.float32)
    (tmp_path / "places.content.npy").write_bytes(_npy(content))
    on_disk = NpyFile(tmp_path / "places.content.npy", "shard 1")
    assert on_disk.shape == (1_000, 384) and len(on_disk) == 1_000
    assert np.array_equal(on_disk[10:700], content[10:700])
    assert np.array_equal(np.concatenate(list(chunks(on_disk))), content)
    on_disk.close()
    (tmp_path / "pickled.npy").write_bytes(_npy(np.array(["a", 1], dtype=object), allow_pickle=True))
    with pytest.raises(PartialError, match="cannot be loaded without pickle"):
        NpyFile(tmp_path / "pickled.npy", "shard 1")
    (tmp_path / "short.npy").write_bytes(_npy(content)[:-4])
    with pytest.raises(PartialError, match="size does not match its header"):
        NpyFile(tmp_path / "short.npy", "shard 1")
    (tmp_path / "junk.npy").write_bytes(b"not an npy file at all")
    with pytest.raises(PartialError, match=r"junk\.npy is not a valid \.npy file"):
        NpyFile(tmp_path / "junk.npy", "shard 1")


def test_a_marker_that_does_not_say_what_made_its_vectors_is_refused() -> None:
    key = b"k" * 32
    marker = {"format": "witple-partial-v4", "files": {}, "place_text_version": "place-text-v1"}
    with pytest.raises(PartialError, match="does not say which model and place text made its vectors"):
        parse_success(orjson.dumps(sign(marker, key)), "shard 2/_SUCCESS.json", key)
    older = {**marker, "format": "witple-partial-v3", "content_model": "0" * 64}
    with pytest.raises(PartialError, match="is not a witple-partial-v4 marker"):
        parse_success(orjson.dumps(sign(older, key)), "shard 2/_SUCCESS.json", key)
    complete = {**marker, "content_model": "0" * 64}
    with pytest.raises(SignatureError, match=r"shard 2/_SUCCESS\.json is not signed"):
        parse_success(orjson.dumps(complete), "shard 2/_SUCCESS.json", key)
    with pytest.raises(SignatureError, match=r"shard 2/_SUCCESS\.json has a wrong signature"):
        parse_success(orjson.dumps(sign(complete, b"another key, not the run's own!")), "shard 2/_SUCCESS.json", key)
    assert parse_success(orjson.dumps(sign(complete, key)), "shard 2/_SUCCESS.json", key)["content_model"] == "0" * 64


def test_tampered_arrays_are_refused(tmp_path: Path, s3_env: dict[str, str]) -> None:
    """Through the reduce's own read path: each object streamed to disk against its marker's sha256,
    then its arrays opened by NpyFile and checked by check_arrays a chunk at a time."""
    from local_stack.sample_data import ensure_bucket
    from witple_batch.s3 import s3_client

    client = s3_client(s3_env["AWS_REGION"])
    bucket = f"tampered-{uuid.uuid4().hex[:8]}"
    ensure_bucket(client, bucket, s3_env["AWS_REGION"])
    client.put_object(Bucket=bucket, Key="shards/00003/users.id_utf8.npy", Body=b"changed")
    with pytest.raises(PartialError, match=r"checksum mismatch for users\.id_utf8\.npy"):
        download(
            client,
            bucket,
            "shards/00003/users.id_utf8.npy",
            tmp_path / "users.id_utf8.npy",
            hashlib.sha256(b"original").hexdigest(),
            "shard 3",
        )

    def opened(arrays: dict[str, np.ndarray]) -> dict[str, NpyFile]:
        for name, array in arrays.items():
            (tmp_path / f"{name}.npy").write_bytes(_npy(array, allow_pickle=array.dtype.hasobject))
        return {name: NpyFile(tmp_path / f"{name}.npy", "shard 0") for name in arrays}

    with pytest.raises(PartialError, match="cannot be loaded without pickle"):
        opened({"users.id_offsets": np.array(["a", 1], dtype=object)})
    with pytest.raises(PartialError, match=r"users\.id_offsets has dtype float64"):
        check_arrays(opened({"users.id_offsets": np.zeros((2, 2))}), "shard 0")
    lying_offsets = {"users.id_offsets": np.array([0, 5, 99]), "users.id_utf8": np.zeros(7, np.uint8)}
    with pytest.raises(PartialError, match="do not describe"):
        check_arrays(opened(lying_offsets), "shard 0")


def test_hostile_records_end_to_end_are_rejected_alone_and_ids_stored_byte_for_byte(s3_env, model_dir, database_url):
    """One file through S3, the shard, the reduce and the database: each bad record rejected with its
    reason (the file and its neighbours kept), ids stored exactly, the ledger agreeing with the rejects file."""
    from local_stack.sample_data import SampleFile, SampleSet
    from tests.helpers import fresh_env, pipeline, query, work_objects

    def action(user: str) -> str:
        return f'{{"user_id": {user}, "place_category": "restaurants", "place_id": "p1", "action_type": "click"}}'

    korean, emoji, arabic, longest = "김민수", "🧳traveler", "مسافر", "x" * 256
    records = [
        action('"\\ud800"'),  # a lone surrogate: not valid JSON text for this record
        '{"user_id": "u1", "place_category": "restaurants", "place_id": "p1", "action_type": "click",'
        ' "action_value": 1e400}',  # a number that is infinity
        *(action(orjson.dumps(name).decode()) for name in (korean, emoji, arabic)),
        action("42"),
        action('"42"'),
        action('" 42"'),  # one user, three spellings
        action(orjson.dumps(longest).decode()),  # 256 characters: kept
        action(orjson.dumps("y" * 257).decode()),  # 257: rejected
        action('"a\\u0000b"'),  # a NUL
    ]
    body = ('{"batch_id": "hostile-1", "count": 11, "actions": [' + ", ".join(records) + "]}").encode()
    key = "user-actions/year=2025/month=01/day=15/hour=14/batch-1736950000000-11-hostile1.json"
    env = fresh_env(s3_env, model_dir, DATABASE_URL=database_url, CATALOGUE_SOURCE="none")
    pipeline(env, SampleSet([SampleFile(key, body)], None), shards=1)  # type: ignore[arg-type]
    users = dict(query(database_url, "SELECT user_id, total_actions FROM user_behavior_vectors"))
    assert users == {korean: 1, emoji: 1, arabic: 1, "42": 3, longest: 1}
    stored = query(database_url, "SELECT convert_to(user_id, 'UTF8') FROM user_behavior_vectors ORDER BY 1")
    assert sorted(bytes(b) for (b,) in stored) == sorted(u.encode() for u in users)  # byte for byte
    [(status, records_read, accepted, rejected, by_reason)] = query(
        database_url, "SELECT status, records, accepted, rejected, rejects_by_reason FROM processed_files"
    )
    assert (status, records_read, accepted, rejected) == ("processed", 11, 7, 4)
    rejects_key = next(k for k in work_objects(env) if k.endswith("rejects.jsonl.gz"))
    lines = [orjson.loads(line) for line in gzip.decompress(work_objects(env)[rejects_key]).splitlines()]
    [summary] = [line for line in lines if "by_reason" in line]
    assert summary == {"key": key, "rejected": 4, "by_reason": by_reason}  # the ledger agrees with the file
    assert by_reason == {  # one record each, each with its own reason
        "record is not valid JSON: no low surrogate in string": 1,
        "record is not valid JSON: number is infinity when parsed as double": 1,
        "user_id is longer than 256 characters": 1,
        "user_id contains control characters": 1,
    }


def test_an_envelope_batch_id_holding_a_nul_is_left_out_and_the_run_succeeds(s3_env, model_dir, database_url):
    """PostgreSQL text cannot store NUL: kept, the id would stop every reduce of the file. It is no id,
    as one too long is; the file's actions are kept and its neighbour's id is reported."""
    from local_stack.sample_data import SampleFile, SampleSet
    from tests.helpers import fresh_env, pipeline, query

    action = {"user_id": "u1", "place_category": "restaurants", "place_id": "p1", "action_type": "click"}
    prefix = "user-actions/year=2025/month=01/day=15/hour=14/"
    files = [
        SampleFile(
            f"{prefix}batch-1736950000000-1-nul.json", orjson.dumps({"batch_id": "a\u0000b", "actions": [action]})
        ),
        SampleFile(f"{prefix}batch-1736950000001-1-ok.json", orjson.dumps({"batch_id": "env-ok", "actions": [action]})),
    ]
    env = fresh_env(s3_env, model_dir, DATABASE_URL=database_url, CATALOGUE_SOURCE="none")
    pipeline(env, SampleSet(files, None), shards=2)  # type: ignore[arg-type]
    assert query(database_url, "SELECT status, error FROM batch_runs") == [("notified", None)]
    rows = query(database_url, "SELECT key, status, accepted, envelope_batch_id FROM processed_files ORDER BY key")
    assert rows == [(files[0].key, "processed", 1, None), (files[1].key, "processed", 1, "env-ok")]
    assert query(database_url, "SELECT user_id, total_actions FROM user_behavior_vectors") == [("u1", 2)]
