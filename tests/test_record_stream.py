"""The streaming splitter against orjson as the oracle: same records, whatever the chunk boundaries."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shard_job.record_stream import DocumentError, RecordSplitter

# strings full of the characters a scanner can trip on
tricky_text = st.text(alphabet=st.sampled_from('ab"\\{}[],: \n\t\u00e9\U0001f600'), max_size=12)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | tricky_text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(tricky_text, children, max_size=4),
    max_leaves=15,
)


def split(body: bytes, cuts: list[int], max_record: int = 1 << 20) -> tuple[list[bytes], RecordSplitter]:
    splitter = RecordSplitter(max_record)
    out, at = [], 0
    for cut in [*sorted(c % (len(body) + 1) for c in cuts), len(body)]:
        out += [e.data for e in splitter.feed(body[at:cut])]
        at = max(at, cut)
    out += [e.data for e in splitter.finish()]
    return out, splitter


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(json_values, max_size=8), st.lists(st.integers(0, 10_000), max_size=6), st.booleans())
def test_array_elements_match_orjson_at_any_chunk_boundary(records, cuts, indent) -> None:
    body = orjson.dumps(records, option=orjson.OPT_INDENT_2 if indent else 0)
    elements, _ = split(body, cuts)
    assert [orjson.loads(e) for e in elements] == orjson.loads(body)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(json_values, max_size=6),
    st.dictionaries(st.sampled_from(["batch_id", "count", "server_info", "x"]), json_values, max_size=4),
    st.lists(st.integers(0, 10_000), max_size=6),
)
def test_envelope_actions_and_fields_match_orjson(records, fields, cuts) -> None:
    envelope = {**fields, "actions": records}
    body = orjson.dumps(envelope)
    elements, splitter = split(body, cuts)
    parsed = orjson.loads(body)
    assert [orjson.loads(e) for e in elements] == parsed["actions"]
    assert splitter.envelope == {**parsed, "actions": []}


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(tricky_text.filter(lambda k: k != "actions"), json_values, max_size=5), st.lists(st.integers()))
def test_a_bare_object_is_one_record(record, cuts) -> None:
    body = orjson.dumps(record)
    elements, splitter = split(body, cuts)
    assert [orjson.loads(e) for e in elements] == [orjson.loads(body)]
    assert splitter.envelope is None


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.lists(st.integers(0, 400), max_size=4))
def test_any_bytes_give_records_or_one_document_error(body, cuts) -> None:
    try:
        split(body, cuts, max_record=64)
    except DocumentError as exc:
        assert str(exc)


def test_escaped_quotes_and_backslash_runs_across_chunks() -> None:
    records = [{"a": 'x\\"y'}, {"b": "\\\\"}, {"c": '\\\\\\"'}, {"d": "]},{["}]
    body = orjson.dumps(records)
    for cut in range(len(body) + 1):
        elements, _ = split(body, [cut])
        assert [orjson.loads(e) for e in elements] == records, cut
    for size in (1, 2, 3):
        splitter = RecordSplitter(1 << 20)
        out = []
        for at in range(0, len(body), size):
            out += splitter.feed(body[at : at + size])
        out += splitter.finish()
        assert [orjson.loads(e.data) for e in out] == records


def test_empty_arrays_and_stray_commas() -> None:
    assert split(b"[]", [])[0] == []
    assert split(b" [ \n ] ", [2])[0] == []
    assert split(b'{"actions": [ ]}', [])[0] == []
    assert split(b"[1,,2]", [])[0] == [b"1", b"", b"2"]
    assert split(b"[1,2,]", [])[0] == [b"1", b"2", b""]


def test_a_record_over_the_cap_keeps_only_its_first_bytes() -> None:
    splitter = RecordSplitter(100)
    body = b'[{"a": "' + b"x" * 10_000 + b'"}, {"b": 1}]'
    out = []
    for at in range(0, len(body), 777):
        out += splitter.feed(body[at : at + 777])
    out += splitter.finish()
    assert [(len(e.data), e.size, e.oversized) for e in out] == [(100, 10_009, True), (9, 9, False)]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "empty file"),
        (b" \n", "empty file"),
        (b"[1, 2", "ends before its brackets close"),
        (b'{"actions": [1, 2]', "ends before its brackets close"),
        (b'["abc]', "ends before its brackets close"),
        (b"[1, 2}", "mismatched brackets"),
        (b'{"a": 1]', "mismatched brackets"),
        (b'{"a": 1}\n{"a": 2}\n', "looks like JSON Lines"),
        (b"[1] x", "trailing data"),
        (b'"just a string"', r"not an object or array \(got str\)"),
        (b"{nope", "ends before its brackets close"),
        (b"nope", "not JSON"),
        (b'{"actions": {"user_id": 1}}', r"cannot be read as an array of records \(it is a dict\)"),
    ],
)
def test_broken_documents_name_their_fault(body: bytes, reason: str) -> None:
    with pytest.raises(DocumentError, match=reason):
        split(body, [])


@pytest.mark.parametrize(
    "body",
    [
        b'{,"actions":[{"a":1}]}',
        b'{"a":1,,"actions":[{"a":1}]}',
        b'{"batch_id": nope,"actions":[{"a":1}]}',
        b'{"actions":[{"a":1}],}',
        b'{"actions":[{"a":1}] "x"}',
        b'{"actions":[{"a":1}],"actions":[{"a":2}]}',
        b'{"actions"' + b" " * 5000 + b':[{"a":1}]}',
    ],
)
def test_a_malformed_envelope_gives_no_records(body: bytes) -> None:
    with pytest.raises(DocumentError):
        split(body, [7])


def test_the_record_cap_stops_inside_a_chunk() -> None:
    splitter = RecordSplitter(64, max_records=1000)
    with pytest.raises(Exception, match="more than 1000 records"):
        splitter.feed(b"[" + b"{}," * 200_000)
