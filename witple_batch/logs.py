"""One JSON object per line on stderr (CloudWatch indexes each line as an event); secrets masked."""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from typing import Any

import orjson

_URL_PASSWORD = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]*)@")
_KEY_SECRET = re.compile(
    r"(?i)\b(password|passwd|pwd|pgpassword|sslpassword|secret|token|access_token|api_key|apikey|signature"
    r"|x-amz-signature)=([^\s&'\"]+)"
)


def mask_secrets(text: str) -> str:
    """Hide passwords in URLs (`postgresql://u:pw@h`) and secrets in key=value strings (`?token=...`)."""
    text = _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)
    return _KEY_SECRET.sub(lambda m: f"{m[1]}=***", text)


def _masked(value: Any) -> Any:
    """Mask every string inside a log event before it is serialised, so the line stays valid JSON."""
    if isinstance(value, str):
        return mask_secrets(value)
    if isinstance(value, dict):
        return {key: _masked(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_masked(item) for item in value]
    return value


class JsonFormatter(logging.Formatter):
    def __init__(self, job: str) -> None:
        super().__init__()
        self.job = job

    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "job": self.job,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if fields:
            event.update(fields)
        if record.exc_info:
            event["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(
            _masked(event), default=lambda v: mask_secrets(str(v)), option=orjson.OPT_SERIALIZE_NUMPY
        ).decode()


LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def log_level() -> str | None:
    """LOG_LEVEL (default INFO), or None when it names no level."""
    value = os.environ.get("LOG_LEVEL", "INFO").strip().upper() or "INFO"
    return value if value in LEVELS else None


def configure(job: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(job))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def event(logger: logging.Logger, msg: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log a message with structured fields merged into the JSON line."""
    logger.log(level, msg, extra={"fields": fields})
