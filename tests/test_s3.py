"""Our S3 clients parse timestamps without dateutil, to the same instants botocore's parser gives, and
make as many attempts as they are told, counted as AWS_MAX_ATTEMPTS counts them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from botocore.utils import parse_timestamp

from local_stack.sample_data import ensure_bucket
from witple_batch.s3 import s3_client, s3_timestamp

FORMS = [
    "2025-01-15T14:00:00.000Z",  # ListObjectsV2's LastModified
    "2025-01-15T14:00:00.123456Z",
    "2025-01-15T23:30:00+09:00",
    "Wed, 15 Jan 2025 14:00:00 GMT",  # a GET's Last-Modified header
    "Wed, 15 Jan 2025 14:00:00 -0000",
    "2025-01-15T14:00:00",  # no zone: botocore's own reading
    "1736949600",
    1736949600,
    1736949600.5,
    # not S3's own forms (an uploader's Expires header may be anything): botocore's reading
    "Wed, 15 Jan 75 14:00:00 GMT",
    "Wed, 15 Jan 2025 14:00:00 EST",
    "Wed, 15 Jan 2025 14:00:00 UT",
    "2025-01-15T14:00:00.123456789Z",
    "2025-01-15t14:00:00z",
    " 2025-01-15T14:00:00Z ",
    "\u0662025-01-15T14:00:00Z",  # an Arabic-Indic digit: not S3's form
]


@pytest.mark.filterwarnings("ignore::dateutil.parser.UnknownTimezoneWarning")  # botocore's reading of EST
@pytest.mark.parametrize("value", FORMS)
def test_timestamps_parse_to_botocores_instant(value: Any) -> None:
    ours, theirs = s3_timestamp(value), parse_timestamp(value)
    assert ours == theirs
    assert (ours.tzinfo is None) == (theirs.tzinfo is None)


@pytest.mark.parametrize(
    "value",
    [
        "2025-13-15T14:00:00Z",
        "2025-01-15T24:00:00Z",
        "Sun, 30 Feb 2025 14:00:00 GMT",
        "wed, 15 jan 2025 14:00:00 gmt",
        "2025-W03-3T14:00:00Z",
        "",
    ],
)
def test_a_broken_timestamp_fails_as_botocore_fails(value: str) -> None:
    with pytest.raises(ValueError, match="Invalid timestamp"):
        parse_timestamp(value)
    with pytest.raises(ValueError, match="Invalid timestamp"):
        s3_timestamp(value)


def test_listing_and_get_give_the_stock_clients_times(s3_env: dict[str, str]) -> None:
    region = s3_env["AWS_REGION"]
    ours, stock = s3_client(region), boto3.session.Session().client("s3", region_name=region)
    bucket = f"s3-times-{uuid.uuid4().hex[:8]}"
    ensure_bucket(ours, bucket, region)
    ours.put_object(Bucket=bucket, Key="a.json", Body=b"{}")

    listed = [c.list_objects_v2(Bucket=bucket)["Contents"][0]["LastModified"] for c in (ours, stock)]
    got = [c.get_object(Bucket=bucket, Key="a.json")["LastModified"] for c in (ours, stock)]
    assert listed[0] == listed[1] and got[0] == got[1]
    assert abs(listed[0] - datetime.now(UTC)).total_seconds() < 600
    # the parser is our client's own: a client made after it still gets botocore's (dateutil's zones)
    assert listed[0].tzinfo is UTC and got[0].tzinfo is UTC
    assert listed[1].tzinfo is not UTC and got[1].tzinfo is not UTC


def test_attempts_count_as_aws_max_attempts_does_and_a_fail_fast_client_keeps_its_cap(moto, s3_env, monkeypatch):
    """AWS_MAX_ATTEMPTS=3 is three attempts in all (botocore's Config max_attempts would make four),
    and lowers no fail-fast client's cap of 2 to more: counted at a proxy answering 500 for the key."""
    from botocore.exceptions import ClientError

    from local_stack.fault_proxy import FaultProxy

    region = s3_env["AWS_REGION"]
    bucket = f"attempts-{uuid.uuid4().hex[:8]}"
    ensure_bucket(s3_client(region), bucket, region)
    with FaultProxy.running(moto.endpoint, fail_keys=("always-500",)) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        monkeypatch.setenv("AWS_MAX_ATTEMPTS", "3")
        for client, attempts in ((s3_client(region), 3), (s3_client(region, max_attempts=2), 2)):
            proxy.injected = 0
            with pytest.raises(ClientError, match="InternalError"):
                client.get_object(Bucket=bucket, Key="always-500")
            assert proxy.injected == attempts
