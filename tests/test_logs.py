from __future__ import annotations

import json
import logging

import pytest

from witple_batch.logs import JsonFormatter, event, mask_secrets


@pytest.mark.parametrize(
    ("raw", "masked"),
    [
        ("postgresql://app:s3cret@db:5432/x", "postgresql://app:***@db:5432/x"),
        ("connect to postgres://u:p%40ss@h/db failed", "connect to postgres://u:***@h/db failed"),
        ("host=db password=hunter2 user=x", "host=db password=*** user=x"),
        ("postgresql://app@db/x", "postgresql://app@db/x"),
        ("https://main.example/hook?token=abc123&x=1", "https://main.example/hook?token=***&x=1"),
        ("https://h/x?api_key=K&access_token=T", "https://h/x?api_key=***&access_token=***"),
        ("PGPASSWORD=s3 psql sslpassword=k2", "PGPASSWORD=*** psql sslpassword=***"),
    ],
)
def test_passwords_never_reach_the_log(raw: str, masked: str) -> None:
    assert mask_secrets(raw) == masked


def test_one_json_object_per_line_with_fields(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("t")
    with caplog.at_level(logging.INFO):
        event(logger, "loaded", url="postgresql://a:b@c/d", rows=3)
    line = JsonFormatter("shard_job").format(caplog.records[0])
    assert "\n" not in line
    data = json.loads(line)
    assert data["msg"] == "loaded"
    assert data["rows"] == 3
    assert data["job"] == "shard_job"
    assert data["url"] == "postgresql://a:***@c/d"


def test_masking_keeps_every_line_valid_json(caplog: pytest.LogCaptureFixture) -> None:
    """A password holding quotes, or text after a URL without '@', must not be eaten across JSON fields."""
    logger = logging.getLogger("t")
    with caplog.at_level(logging.INFO):
        event(logger, "x://u:abc", other="me@example.com", url='postgresql://u:p"w,d@h/db', nested={"k": ["token=zz"]})
    data = json.loads(JsonFormatter("reduce_job").format(caplog.records[0]))
    assert data["msg"] == "x://u:abc"
    assert data["other"] == "me@example.com"
    assert data["url"] == "postgresql://u:***@h/db"
    assert data["nested"] == {"k": ["token=***"]}
