"""An independent recomputation of every vector from the tables, in float64 numpy, for the tests.

It reads only what the definition needs (interactions, content vectors and which model and text
made them) and applies DESIGN.md's formulas directly, with no code shared with the reduce:

    m_u = sum_p w_up c_p / sum_p w_up       over places whose content is of the given space
    b_p = sum_u w_up m_u / sum_u w_up       over users that have a vector
    combined_p = normalise(c_p + b_p), c_p without b_p, nothing for content of another space
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import psycopg
from pgvector.psycopg import register_vector

Key = tuple[str, str]


@dataclass
class Stored:
    users: dict[str, np.ndarray | None]
    behaviour: dict[Key, np.ndarray | None]
    combined: dict[Key, np.ndarray | None]
    content: dict[Key, np.ndarray | None]
    content_model: dict[Key, str | None]
    weights: dict[str, float] = field(default_factory=dict)  # each user's sum of w over its pairs in the space


def _array(value: object) -> np.ndarray | None:
    return None if value is None else value.to_numpy().astype(np.float64)  # type: ignore[attr-defined]


def stored(url: str) -> Stored:
    with psycopg.connect(url) as conn:
        register_vector(conn)
        users = {u: _array(v) for u, v in conn.execute("SELECT user_id, behavior_vector FROM user_behavior_vectors")}
        places = conn.execute(
            "SELECT place_category, place_id, content_vector, behavior_vector, combined_vector, content_model"
            " FROM place_vectors"
        ).fetchall()
    return Stored(
        users=users,
        content={(c, p): _array(v) for c, p, v, _, _, _ in places},
        behaviour={(c, p): _array(v) for c, p, _, v, _, _ in places},
        combined={(c, p): _array(v) for c, p, _, _, v, _ in places},
        content_model={(c, p): m for c, p, _, _, _, m in places},
    )


def expected(url: str, weights: tuple[float, float, float], model: str, text_version: str) -> Stored:
    wc, wl, wb = weights
    with psycopg.connect(url) as conn:
        register_vector(conn)
        places = conn.execute(
            "SELECT place_category, place_id, content_vector, content_model, place_text_version FROM place_vectors"
        ).fetchall()
        pairs = conn.execute(
            "SELECT user_id, place_category, place_id, clicks, likes, bookmarks FROM user_place_interactions"
        ).fetchall()
        with_rows = {u for (u,) in conn.execute("SELECT user_id FROM user_behavior_vectors")}
    content = {(c, p): _array(v) for c, p, v, _, _ in places}
    in_space = {(c, p) for c, p, v, m, t in places if v is not None and m == model and t == text_version}
    sums: dict[str, np.ndarray] = {}
    weight: dict[str, float] = {}
    for user, category, place, clicks, likes, bookmarks in pairs:
        w = clicks * wc + likes * wl + bookmarks * wb
        if w > 0 and (category, place) in in_space and user in with_rows:
            sums[user] = sums.get(user, 0) + w * content[(category, place)]  # type: ignore[operator]
            weight[user] = weight.get(user, 0) + w
    users: dict[str, np.ndarray | None] = {u: (sums[u] / weight[u] if u in sums else None) for u in with_rows}
    b_sums: dict[Key, np.ndarray] = {}
    b_weight: dict[Key, float] = {}
    for user, category, place, clicks, likes, bookmarks in pairs:
        w = clicks * wc + likes * wl + bookmarks * wb
        if w > 0 and users.get(user) is not None:
            b_sums[(category, place)] = b_sums.get((category, place), 0) + w * users[user]  # type: ignore[operator]
            b_weight[(category, place)] = b_weight.get((category, place), 0) + w
    behaviour: dict[Key, np.ndarray | None] = {k: (b_sums[k] / b_weight[k] if k in b_sums else None) for k in content}
    combined: dict[Key, np.ndarray | None] = {}
    for key, c in content.items():
        b = behaviour[key]
        if key not in in_space:
            combined[key] = None
        elif b is None:
            combined[key] = c
        else:
            total = c + b  # type: ignore[operator]
            combined[key] = total / np.linalg.norm(total)
    models = {k: m for (c, p, _, m, _), k in zip(places, content, strict=True)}
    return Stored(users, behaviour, combined, content, models, weight)


def stored_sums(url: str) -> dict[str, tuple[np.ndarray, float]]:
    """Each user's running sums as the reduce keeps them: (sum of w c in float64, sum of w)."""
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT user_id, content_sum, weight FROM user_content_sums").fetchall()
    return {u: (np.frombuffer(s, dtype="<f8"), w) for u, s, w in rows}


def assert_follows_the_definition(url: str, weights: tuple[float, float, float], model: str, text_version: str) -> None:
    """Every user, place behaviour and combined vector stored is the definition's."""
    now, wanted = stored(url), expected(url, weights, model, text_version)
    assert_close(now.users, wanted.users, "user vector")
    assert_close(now.behaviour, wanted.behaviour, "place behaviour vector")
    assert_close(now.combined, wanted.combined, "combined vector")


def assert_close(actual: dict, wanted: dict, what: str, atol: float = 1e-5) -> None:
    assert set(actual) == set(wanted), f"{what}: different keys"
    for key, vector in wanted.items():
        got = actual[key]
        if vector is None:
            assert got is None, f"{what} {key}: expected no vector"
        else:
            assert got is not None, f"{what} {key}: missing vector"
            np.testing.assert_allclose(got, vector, atol=atol, err_msg=f"{what} {key}")
