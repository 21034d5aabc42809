"""The text a place is embedded from. Versioned: changing it changes every content vector.

v1 uses what every action carries (category and id); a catalog with names and descriptions
would be v2. The category reads as words ("leisure sports") so MiniLM sees language.
"""

from __future__ import annotations

PLACE_TEXT_VERSION = "place-text-v1"


def place_text(place_category: str, place_id: str) -> str:
    category = place_category.replace("_", " ").strip()
    return f"{category} place {place_id}"
