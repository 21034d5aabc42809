"""How well vectors keep categories apart: leave-one-out nearest neighbour and mean cosines."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Separation:
    accuracy: float  # share of texts whose nearest other text is of their category
    intra: float  # mean cosine between two texts of one category
    inter: float  # mean cosine between texts of two categories


def separation(vectors: np.ndarray, labels: Sequence[str]) -> Separation:
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    cosines = unit @ unit.T
    label = np.asarray(labels)
    same = label[:, None] == label[None, :]
    other = ~np.eye(len(label), dtype=bool)
    nearest = np.where(other, cosines, -np.inf).argmax(axis=1)
    return Separation(
        accuracy=float((label[nearest] == label).mean()),
        intra=float(cosines[same & other].mean()),
        inter=float(cosines[~same].mean()),
    )


def chance(labels: Sequence[str]) -> float:
    """Accuracy of a neighbour picked at random among the others."""
    counts = Counter(labels)
    return sum(n * (n - 1) for n in counts.values()) / (len(labels) * (len(labels) - 1))


def character_bigrams(texts: Sequence[str]) -> np.ndarray:
    """Counts of each text's character pairs: what sharing letters alone gives, with no model at all."""
    grams = [Counter(text[i : i + 2] for i in range(len(text) - 1)) for text in texts]
    vocabulary = {gram: column for column, gram in enumerate(sorted(set().union(*grams)))}
    counts = np.zeros((len(texts), len(vocabulary)), dtype=np.float64)
    for row, text_grams in enumerate(grams):
        for gram, count in text_grams.items():
            counts[row, vocabulary[gram]] = count
    return counts
