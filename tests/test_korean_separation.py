from __future__ import annotations

import collections
import re

import numpy as np
import pytest

from benchmarks import korean_places
from benchmarks.separation import chance, character_bigrams, separation

HANGUL = re.compile("[\uac00-\ud7a3]")


def test_nearest_neighbour_accuracy_and_mean_cosines() -> None:
    vectors = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [0.8, 0.2]])
    # the last "b" lies among the "a"s: its nearest neighbour is an "a", every other row's is right
    result = separation(vectors, ["a", "a", "b", "b", "b"])
    assert result.accuracy == pytest.approx(4 / 5)
    assert result.intra > result.inter
    assert separation(vectors, ["a", "b", "a", "b", "a"]).accuracy < result.accuracy


def test_chance_is_a_random_neighbour_among_the_others() -> None:
    assert chance(korean_places.labels()) == pytest.approx(9 / 59)


def test_character_bigrams_count_shared_letter_pairs() -> None:
    counts = character_bigrams(["해수욕장", "해수욕장", "abc"])
    assert counts[0].tolist() == counts[1].tolist()
    assert counts[0] @ counts[2] == 0  # nothing shared
    assert counts[2].sum() == 2  # "ab", "bc"


def test_the_places_are_six_categories_of_ten_in_both_languages() -> None:
    assert collections.Counter(korean_places.labels()) == dict.fromkeys(korean_places.CATEGORIES, 10)
    korean, english = korean_places.texts("korean"), korean_places.texts("english")
    assert all(HANGUL.search(text) for text in korean)
    assert not any(HANGUL.search(text) for text in english)
    # one catalogue category for all: the label is never given away as a category word
    assert {p.korean.category for p in korean_places.PLACES} == {"관광지"}
    assert {p.english.category for p in korean_places.PLACES} == {"tourist attraction"}
    assert len(set(korean)) == len(set(english)) == 60
