"""HMAC-SHA256, the one signer: of a run's control documents (with the run key) and of webhook bodies.

The plans, the manifest and each shard's `_SUCCESS.json` decide what the reduce applies: which
files a run owns and which partial bytes are the shard's (their sha256 prove integrity, not
authorship). Anyone who can write the work prefix could otherwise put arbitrary vectors into
the main server's tables. So each document carries `hmac`, computed over its other fields
(canonical JSON, keys sorted) with PARTIALS_SECRET, and every reader refuses a document that is
unsigned or wrongly signed, naming it. A webhook body is signed the same way with WEBHOOK_SECRET
(witple_batch/webhook.py), so the main server can tell our notices from anyone else's.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import orjson

from witple_batch.errors import PermanentError

FIELD = "hmac"


class SignatureError(PermanentError):
    """A control document is unsigned or was signed without the run key: it is not ours."""


def mac(key: bytes, message: bytes) -> str:
    """The hex HMAC-SHA256 of `message` under `key`."""
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def _document_mac(body: dict[str, Any], key: bytes) -> str:
    unsigned = {k: v for k, v in body.items() if k != FIELD}
    return mac(key, orjson.dumps(unsigned, option=orjson.OPT_SORT_KEYS))


def sign(body: dict[str, Any], key: bytes) -> dict[str, Any]:
    return {**body, FIELD: _document_mac(body, key)}


def verify(body: dict[str, Any], key: bytes, where: str) -> dict[str, Any]:
    given = body.get(FIELD)
    if not isinstance(given, str):
        raise SignatureError(f"{where} is not signed: refused (PARTIALS_SECRET signs every plan and marker)")
    if not hmac.compare_digest(given.encode("utf-8", "replace"), _document_mac(body, key).encode()):
        raise SignatureError(f"{where} has a wrong signature: refused (written or changed without the run key)")
    return body
