"""Who wrote a run's control documents: an HMAC-SHA256 with a key only the jobs hold.

The plans, the manifest and each shard's `_SUCCESS.json` decide what the reduce applies: which
files a run owns and which partial bytes are the shard's (their sha256 prove integrity, not
authorship). Anyone who can write the work prefix could otherwise put arbitrary vectors into
the main server's tables. So each document carries `hmac`, computed over its other fields
(canonical JSON, keys sorted) with PARTIALS_SECRET, and every reader refuses a document that is
unsigned or wrongly signed, naming it.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import orjson

from witple_batch.settings import PermanentError

FIELD = "hmac"
MIN_KEY_CHARS = 32


class SignatureError(PermanentError):
    """A control document is unsigned or was signed without the run key: it is not ours."""


def _mac(body: dict[str, Any], key: bytes) -> str:
    unsigned = {k: v for k, v in body.items() if k != FIELD}
    return hmac.new(key, orjson.dumps(unsigned, option=orjson.OPT_SORT_KEYS), hashlib.sha256).hexdigest()


def sign(body: dict[str, Any], key: bytes) -> dict[str, Any]:
    return {**body, FIELD: _mac(body, key)}


def verify(body: dict[str, Any], key: bytes, where: str) -> dict[str, Any]:
    given = body.get(FIELD)
    if not isinstance(given, str):
        raise SignatureError(f"{where} is not signed: refused (PARTIALS_SECRET signs every plan and marker)")
    if not hmac.compare_digest(given.encode("utf-8", "replace"), _mac(body, key).encode()):
        raise SignatureError(f"{where} has a wrong signature: refused (written or changed without the run key)")
    return body
