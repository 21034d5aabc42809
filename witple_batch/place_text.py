"""The text a place is embedded from. Versioned: changing it changes every content vector.

v2 reads the place's catalogue entry: name, category, region and city, then the overview last,
so the model's token budget (the embedder truncates at max_seq_length) cuts the overview's
tail, never the name. A place the catalogue does not know gets its category as words ("leisure
sports"): no digits of its id, which put false similarity between unrelated places (v1's
`restaurants place 100017` was closer to `cafe place 100017` than to another restaurant). A
content vector is keyed by the model and the sha256 of its text: the same text under the same
model is the same vector, whoever embeds it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

PLACE_TEXT_VERSION = "place-text-v2"
MAX_TEXT_CHARS = 4000  # far past 256 tokens: the cut is the tokenizer's, this only bounds the work
CATALOGUE_FIELD_SEPARATOR = "\x1f"  # the unit separator: no catalogue field holds it


@dataclass(frozen=True)
class CatalogueEntry:
    """A place as the main server's catalogue describes it (any field may be missing)."""

    name: str | None = None
    overview: str | None = None
    region: str | None = None
    city: str | None = None
    category: str | None = None

    def sha256(self) -> bytes:
        """The fingerprint of the fields a text is made from, as witple_catalogue_sha256 (migration
        012) computes it in SQL: a changed fingerprint is an edited catalogue row."""
        fields = (self.name, (self.overview or "")[:MAX_TEXT_CHARS], self.region, self.city, self.category)
        return hashlib.sha256(CATALOGUE_FIELD_SEPARATOR.join(f or "" for f in fields).encode()).digest()


def category_words(place_category: str) -> str:
    return place_category.replace("_", " ").strip()


def _clean(value: str | None) -> str:
    return " ".join((value or "").split())


def place_text(place_category: str, entry: CatalogueEntry | None) -> str:
    if entry is None:
        return category_words(place_category)
    where = " ".join(part for part in (_clean(entry.region), _clean(entry.city)) if part)
    parts = (
        _clean(entry.name),
        _clean(entry.category) or category_words(place_category),
        where,
        _clean(entry.overview),
    )
    return ". ".join(part for part in parts if part)[:MAX_TEXT_CHARS]


def text_sha256(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()
