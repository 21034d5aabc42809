"""Which vectors may be compared and averaged together: one model, one place text version, one set of weights.

A content vector is a function of the model and the place text; a behaviour vector is a weighted
mean of content vectors, weighted by action counts times ACTION_WEIGHTS. Vectors made in two
different spaces are never blended: when any part changes, everything built on it is recomputed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from witple_batch.errors import ConfigError

ACTION_TYPES = ("click", "like", "bookmark")  # the weighted types, in the column order of every count array
COUNT_COLUMNS = len(ACTION_TYPES) + 1  # and one column for every other type: counted, weight 0
DEFAULT_WEIGHTS = "click=1,like=3,bookmark=5"
SPACE_KEY = "space"  # in a run's plan: the space its planner read; in its stats: the space its reduce applied


@dataclass(frozen=True)
class ActionWeights:
    """What one action of each type adds to a (user, place) pair's weight; other types add nothing."""

    click: float
    like: float
    bookmark: float

    @classmethod
    def parse(cls, raw: str, name: str = "ACTION_WEIGHTS") -> ActionWeights:
        """`click=1,like=3,bookmark=5`; every type must be named once, each weight in [0, 1e6)."""
        weights: dict[str, float] = {}
        for part in filter(None, (p.strip() for p in raw.split(","))):
            key, sep, value = part.partition("=")
            key = key.strip().lower()
            if not sep or key not in ACTION_TYPES:
                raise ConfigError(f"{name} entries must be <{'|'.join(ACTION_TYPES)}>=<number>, got {part!r}")
            try:
                weight = float(value)
            except ValueError:
                raise ConfigError(f"{name}: weight for {key} is not a number: {value!r}") from None
            if not 0 <= weight < 1e6:
                raise ConfigError(f"{name}: weight for {key} must be between 0 and 1e6")
            weights[key] = weight
        if missing := set(ACTION_TYPES) - set(weights):
            raise ConfigError(f"{name} lacks a weight for {', '.join(sorted(missing))}")
        return cls(**weights)

    def as_dict(self) -> dict[str, float]:
        return {"click": self.click, "like": self.like, "bookmark": self.bookmark}


@dataclass(frozen=True)
class VectorSpace:
    """The space stored vectors live in. `weights` is None where only the embedding matters (what a
    planner reads off the children's model, what a shard embedded with)."""

    model: str  # sha256 of the model.onnx that embeds place texts
    text_version: str  # witple_batch.place_text.PLACE_TEXT_VERSION
    weights: ActionWeights | None = None

    def record(self) -> dict[str, str]:
        """As a run's plan (the space its planner read) and stats (the space its reduce applied) hold it."""
        return {"model": self.model, "text_version": self.text_version}

    @classmethod
    def from_record(cls, record: Mapping[str, Any] | None) -> VectorSpace | None:
        if not isinstance(record, Mapping) or not record.get("model"):
            return None
        return cls(str(record["model"]), str(record.get("text_version", "")))

    def sql_params(self) -> dict[str, Any]:
        """The query parameters every vector statement takes: which content counts, how actions weigh."""
        if self.weights is None:
            raise ValueError("a space without weights weighs no action")
        return {
            "model": self.model,
            "text_version": self.text_version,
            "w_click": self.weights.click,
            "w_like": self.weights.like,
            "w_bookmark": self.weights.bookmark,
        }
