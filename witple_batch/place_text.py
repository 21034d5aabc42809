"""The text a place is embedded from. Versioned: changing it changes every content vector.

v1 uses what every action carries (category and id); a catalog with names and descriptions
would be v2. The category reads as words ("leisure sports") so MiniLM sees language. A content
vector is keyed by the model and the sha256 of its text: the same text under the same model is
the same vector, whoever embeds it.
"""

from __future__ import annotations

import hashlib

PLACE_TEXT_VERSION = "place-text-v1"


def place_text(place_category: str, place_id: str) -> str:
    category = place_category.replace("_", " ").strip()
    return f"{category} place {place_id}"


def text_sha256(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()
