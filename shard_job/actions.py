"""Validating one action record. Pure: no I/O, never raises on any input.

A record is accepted (normalised ids, type code, weight, time) or rejected with a reason;
the caller keeps the rest of the file either way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from witple_batch.vector_space import ACTION_TYPES

MAX_VALUE_CHARS = 256
ID_FIELDS = ("user_id", "place_id", "place_category", "action_type")

OTHER_TYPE = len(ACTION_TYPES)  # unknown types: counted in totals, weight 0 in vectors
TYPE_CODES = {name: code for code, name in enumerate(ACTION_TYPES)}

_INT_LIMIT = 10**MAX_VALUE_CHARS
# Unicode categories Cc (C0, DEL, C1 controls) and Cs (lone surrogates), as one scan in C:
# a per-character unicodedata lookup was a third of the shard's parse time
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
# Epoch microseconds outside this range are treated as unparseable (year 1970..2200).
_MAX_MICROS = 7_258_118_400_000_000
# A time further ahead of the batch's plan than this is a broken clock, not an action: kept, it
# would be a user's last_action_date forever.
FUTURE_TOLERANCE_US = 86_400_000_000


@dataclass(frozen=True, slots=True)
class Action:
    user_id: str
    place_category: str
    place_id: str
    type_code: int
    time_us: int | None


def has_control_characters(text: str) -> bool:
    """Whether `text` holds a control character or a lone surrogate: neither is an id (PostgreSQL
    text cannot even store NUL), so the action ids and the envelope's batch_id are judged alike."""
    return _CONTROL.search(text) is not None


def _clean_id(value: Any, field: str) -> tuple[str | None, str | None]:
    """(value, None) or (None, reason)."""
    if isinstance(value, bool) or value is None:
        return None, f"{field} is {'missing' if value is None else 'a boolean'}"
    if isinstance(value, int):
        text = str(value) if abs(value) < _INT_LIMIT else None
        if text is None:
            return None, f"{field} is longer than {MAX_VALUE_CHARS} characters"
    elif isinstance(value, str):
        text = value.strip()
    else:
        return None, f"{field} must be a string or an integer, got {type(value).__name__}"
    if not text:
        return None, f"{field} is empty"
    if len(text) > MAX_VALUE_CHARS:
        return None, f"{field} is longer than {MAX_VALUE_CHARS} characters"
    if has_control_characters(text):
        return None, f"{field} contains control characters"
    return text, None


def _iso_micros(value: Any) -> int | None:
    if not isinstance(value, str) or not 8 <= len(value) <= 40:
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # the collection server writes UTC
    micros = int(moment.timestamp() * 1_000_000)
    return micros if 0 <= micros < _MAX_MICROS else None


def _epoch_ms_micros(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        return None
    if not 0 <= value < _MAX_MICROS // 1000:
        return None
    return int(value * 1000)


def action_time(record: dict[str, Any]) -> int | None:
    """timestamp, else server_timestamp, else server_received_at (epoch ms); None when none parses."""
    micros = _iso_micros(record.get("timestamp"))
    if micros is None:  # the fallbacks are parsed only when needed
        micros = _iso_micros(record.get("server_timestamp"))
    if micros is None:
        micros = _epoch_ms_micros(record.get("server_received_at"))
    return micros


def validate(record: Any, planned_us: int) -> Action | str:
    """An Action, or the reason the record is rejected.

    `planned_us` is when the batch was planned (not now), so a rerun judges the same way.
    """
    if not isinstance(record, dict):
        return f"record is not a JSON object (got {type(record).__name__})"
    values: list[str] = []
    for field in ID_FIELDS:
        value, reason = _clean_id(record.get(field), field)
        if reason is not None:
            return reason
        values.append(value)  # type: ignore[arg-type]
    user_id, place_id, place_category, action_type = values
    time_us = action_time(record)
    if time_us is not None and time_us > planned_us + FUTURE_TOLERANCE_US:
        return "action time is more than a day after the batch was planned"
    return Action(
        user_id=user_id,
        place_category=place_category,
        place_id=place_id,
        type_code=TYPE_CODES.get(action_type.lower(), OTHER_TYPE),
        time_us=time_us,
    )
