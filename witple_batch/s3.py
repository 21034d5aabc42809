"""The one place boto3 S3 clients are made (tests point AWS_ENDPOINT_URL at a moto server)."""

from __future__ import annotations

import functools
import re
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlparse

import boto3
import botocore.loaders
import botocore.session
from botocore.config import Config
from botocore.exceptions import ClientError
from botocore.utils import parse_timestamp

from witple_batch.errors import ConfigError
from witple_batch.settings import aws_max_attempts

# the two forms S3 writes: ListObjectsV2's LastModified and the Last-Modified header
_S3_ISO = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z", re.ASCII)
_S3_HTTP_DATE = re.compile(r"[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT", re.ASCII)
DEFAULT_S3_ATTEMPTS = 8


def s3_timestamp(value: Any) -> datetime:
    """The instant botocore's parser gives, for the two forms S3 writes, without dateutil.

    botocore parses every timestamp through dateutil, a large part of a listed key's client CPU
    and a share of a GET's (`python -m benchmarks.e2e s3-client`); a shard's GET process spends
    its core on botocore. Anything else (an uploader's Expires header, two-digit years, named
    zones) goes to botocore's parser.
    """
    try:
        if isinstance(value, str) and _S3_ISO.fullmatch(value):
            return datetime.fromisoformat(value)
        if isinstance(value, str) and _S3_HTTP_DATE.fullmatch(value):
            return parsedate_to_datetime(value)
    except ValueError:
        pass  # hour 24, 30 February: botocore's reading, or its error
    return parse_timestamp(value)


@functools.cache
def _data_loader() -> Any:
    """One botocore loader per process: each service's JSON model is parsed once, however many clients."""
    return botocore.loaders.create_loader()


def aws_session() -> boto3.session.Session:
    """The one factory behind every AWS client: a botocore session of its own (S3 timestamps parsed
    without dateutil, nobody else's parser changed), sharing the process's parsed service models."""
    session = botocore.session.get_session()
    session.register_component("data_loader", _data_loader())
    session.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=s3_timestamp)
    return boto3.session.Session(botocore_session=session)


def s3_client(region: str, *, pool: int = 16, retry_mode: str = "adaptive", max_attempts: int | None = None) -> Any:
    """An S3 client making at most `max_attempts` attempts per call, the first included, as
    AWS_MAX_ATTEMPTS counts them (botocore's total_max_attempts; its max_attempts would count retries).

    AWS_MAX_ATTEMPTS, when set, replaces the default (DEFAULT_S3_ATTEMPTS) and caps an explicit
    `max_attempts`, never raises it: a fail-fast client keeps its smaller cap.
    """
    attempts = min((n for n in (max_attempts, aws_max_attempts()) if n is not None), default=DEFAULT_S3_ATTEMPTS)
    config = Config(
        region_name=region,
        retries={"mode": retry_mode, "total_max_attempts": attempts},
        max_pool_connections=pool,
        connect_timeout=10,
        read_timeout=60,
    )
    return aws_session().client("s3", config=config)


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """`s3://bucket/some/prefix` -> ("bucket", "some/prefix")."""
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ConfigError(f"not an s3:// URI: {uri!r}")
    return parsed.netloc, parsed.path.lstrip("/")


def get_bytes(client: Any, bucket: str, key: str) -> bytes | None:
    """The object's body, or None when it does not exist (any other error propagates)."""
    try:
        return client.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return None
        raise
