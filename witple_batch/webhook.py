"""The completion webhook's transport: the main server's contract, signed, retried on transient failures only.

Signature: `X-Signature: sha256=<hex>` over `<X-Signature-Timestamp>.<raw body>` with
WEBHOOK_SECRET, made afresh for every attempt so a receiver can reject replays by the
timestamp. `Idempotency-Key: <run id>:<status>` lets it drop a notice it already has (a job
killed after the POST but before recording it sends again). Redirects are not followed: a
signed body goes to the configured URL or nowhere. Which notice to send, and when, is
witple_batch/notices.py's decision.
"""

from __future__ import annotations

import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

import orjson
from tenacity import RetryError, retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from witple_batch.logs import event, mask_secrets
from witple_batch.run_state import Notice, WebhookOutcome
from witple_batch.signing import mac

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Signature"
TIMESTAMP_HEADER = "X-Signature-Timestamp"
IDEMPOTENCY_HEADER = "Idempotency-Key"


class TransientDeliveryError(Exception):
    """5xx, 408, 429, timeout or connection error: worth another try."""


class PermanentDeliveryError(Exception):
    """Any other 3xx or 4xx: the receiver refused the request; retrying sends the same refusal."""


@dataclass(frozen=True)
class Delivery:
    """How a run's notice went: sent, and the webhook's outcome; or not sent, and why."""

    sent: bool
    outcome: WebhookOutcome | None = None
    attempts: int = 0
    error: str | None = None  # the webhook's last error, or why no notice was sent


def payload(
    *,
    job_id: str,
    job_name: str,
    status: Notice,
    run_id: str,
    processed_records: int,
    processing_time_seconds: float,
    s3_input_path: str,
    error_message: str | None,
    metadata: dict[str, Any],
) -> dict[str, Any]:
    """Exactly the contract's fields, with the contract's types (`batch_id` holds the run's id)."""
    return {
        "job_id": str(job_id),
        "job_name": str(job_name),
        "job_status": status.value,
        "batch_id": str(run_id),
        "processed_records": int(processed_records),
        "processing_time_seconds": float(round(processing_time_seconds, 3)),
        "s3_input_path": str(s3_input_path),
        "error_message": None if error_message is None else mask_secrets(str(error_message))[:4000],
        "metadata": metadata,
    }


def signature(body: bytes, secret: str, timestamp: str) -> str:
    return "sha256=" + mac(secret.encode(), timestamp.encode() + b"." + body)


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *_args: Any, **_kwargs: Any) -> None:
        return None  # the 3xx surfaces as an HTTPError: refused, not followed


_OPENER = urllib.request.build_opener(_NoRedirects)


def _post_once(url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        if exc.code >= 500 or exc.code in (408, 429):
            raise TransientDeliveryError(f"HTTP {exc.code}") from None
        raise PermanentDeliveryError(f"HTTP {exc.code}") from None
    except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
        raise TransientDeliveryError(f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}") from None


def origin(url: str) -> str:
    """What the logs say of the webhook URL: scheme, host and port. A path or query may carry a
    credential (`/hooks/T0/B0/XXXX`, `?code=...`) in forms no pattern list can know."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}"


def headers_for(body: bytes, secret: str | None, idempotency_key: str) -> dict[str, str]:
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "witple-batch/1",
        IDEMPOTENCY_HEADER: idempotency_key,
    }
    if secret:
        timestamp = str(int(time.time()))
        headers[TIMESTAMP_HEADER] = timestamp
        headers[SIGNATURE_HEADER] = signature(body, secret, timestamp)
    return headers


def post(
    url: str,
    body_fields: dict[str, Any],
    *,
    secret: str | None,
    attempts: int = 5,
    timeout: float = 10.0,
    backoff: float = 1.0,
) -> Delivery:
    """POST until delivered; never raises (a failed notice must not undo committed data)."""
    body = orjson.dumps(body_fields)
    key = f"{body_fields['batch_id']}:{body_fields['job_status']}"
    tries = 0

    @retry(
        retry=retry_if_exception_type(TransientDeliveryError),
        stop=stop_after_attempt(attempts),
        wait=wait_exponential(multiplier=backoff, max=30),
    )
    def attempt() -> int:
        nonlocal tries
        tries += 1
        return _post_once(url, body, headers_for(body, secret, key), timeout)

    try:
        status = attempt()
    except RetryError as exc:
        error = str(exc.last_attempt.exception())
        event(log, "webhook not delivered", logging.ERROR, url=origin(url), attempts=tries, error=error)
        return Delivery(True, WebhookOutcome.FAILED, tries, error)
    except PermanentDeliveryError as exc:
        event(log, "webhook refused", logging.ERROR, url=origin(url), attempts=tries, error=str(exc))
        return Delivery(True, WebhookOutcome.FAILED, tries, str(exc))
    event(
        log, "webhook delivered", url=origin(url), attempts=tries, status=status, job_status=body_fields["job_status"]
    )
    return Delivery(True, WebhookOutcome.DELIVERED, tries)
