from __future__ import annotations

import pytest

from shard_job.actions import OTHER_TYPE, TYPE_CODES, Action
from shard_job.actions import validate as validate_at

GOOD = {"user_id": "u1", "place_id": "p1", "place_category": "restaurants", "action_type": "like"}
PLANNED_US = 1_737_000_000_000_000  # 2025-01-16T04:00Z: when the batch was planned
DAY_US = 86_400_000_000


def validate(record: object) -> Action | str:
    return validate_at(record, PLANNED_US)


def test_a_good_record_is_normalised() -> None:
    action = validate({**GOOD, "user_id": "  u1 ", "action_type": "LIKE", "place_id": 123456})
    assert action == Action("u1", "restaurants", "123456", TYPE_CODES["like"], None)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"user_id": None}, "user_id is missing"),
        ({"place_id": ""}, "place_id is empty"),
        ({"place_category": "   "}, "place_category is empty"),
        ({"action_type": True}, "action_type is a boolean"),
        ({"user_id": 1.5}, "user_id must be a string or an integer, got float"),
        ({"place_id": ["x"]}, "place_id must be a string or an integer, got list"),
        ({"user_id": "x" * 257}, "user_id is longer than 256 characters"),
        ({"user_id": 10**300}, "user_id is longer than 256 characters"),
        ({"user_id": "bad\x00id"}, "user_id contains control characters"),
        ({"place_id": "line\nbreak"}, "place_id contains control characters"),
    ],
)
def test_each_reject_reason(change: dict, reason: str) -> None:
    assert validate({**GOOD, **change}) == reason


def test_a_missing_field_and_a_non_object_are_rejected() -> None:
    record = dict(GOOD)
    del record["place_category"]
    assert validate(record) == "place_category is missing"
    assert validate(["not", "a", "record"]) == "record is not a JSON object (got list)"


def test_unknown_types_are_kept_with_the_other_code() -> None:
    action = validate({**GOOD, "action_type": "share"})
    assert isinstance(action, Action)
    assert action.type_code == OTHER_TYPE


def test_sql_looking_values_are_plain_data() -> None:
    action = validate({**GOOD, "user_id": "'; DROP TABLE user_behavior_vectors; --"})
    assert isinstance(action, Action)
    assert action.user_id == "'; DROP TABLE user_behavior_vectors; --"


@pytest.mark.parametrize(
    ("fields", "micros"),
    [
        ({"timestamp": "2025-01-15T14:00:00Z"}, 1736949600000000),
        ({"timestamp": "2025-01-15T23:00:00+09:00"}, 1736949600000000),
        ({"timestamp": "garbage", "server_timestamp": "2025-01-15T14:00:00"}, 1736949600000000),
        ({"timestamp": None, "server_received_at": 1736949600000}, 1736949600000000),
        ({"timestamp": "nope", "server_received_at": "1736949600000"}, None),
        ({"server_received_at": float("nan")}, None),
        ({}, None),
    ],
)
def test_action_time_falls_back_and_never_rejects(fields: dict, micros: int | None) -> None:
    action = validate({**GOOD, **fields})
    assert isinstance(action, Action)
    assert action.time_us == micros


def test_a_time_more_than_a_day_after_the_plan_is_rejected() -> None:
    within = PLANNED_US + DAY_US - 1_000_000
    assert isinstance(validate({**GOOD, "server_received_at": within // 1000}), Action)
    beyond = {**GOOD, "timestamp": "2199-01-01T00:00:00Z"}
    assert validate(beyond) == "action time is more than a day after the batch was planned"
    # judged against when the batch was planned, not against the clock
    planned_in_2198 = 7_226_496_000_000_000  # 2198-12-31T00:00Z
    assert isinstance(validate_at(beyond, planned_in_2198), Action)
    late_clock = {**GOOD, "server_received_at": (PLANNED_US + 2 * DAY_US) // 1000}
    assert validate(late_clock) == "action time is more than a day after the batch was planned"
