"""The rest of what recommend_places reads instead of scanning place_vectors per call, kept by each run.

- popular_places: the POPULAR_PLACES places with the most users (ties by key). A run ranks the
  stored ones with the places it gave users: exact, since a place's users only grow.
- fresh_places: the catalogue places no one has acted on, with content of the current space, under
  an HNSW index of their own. A run changes only its own places' rows (the only places whose
  users, catalogue row or content it changes); a new space goes over every place.
- serving_state: the centres the taste terms subtract (the means of the normalised behaviour
  vectors and of the content vectors), recomputed by each run: one pass over place_vectors.
With `everything` (a new space, a rebuild, or a first run) all three follow place_vectors whole;
tests/test_neighbours.py checks they always equal what place_vectors says. A writer of
place_vectors other than the runs (a hand edit, the main server) is seen only when a run next
touches the place, or by `rebuild-vectors`.
"""

from __future__ import annotations

from typing import Any

import psycopg

from witple_batch.vector_space import VectorSpace

POPULAR_PLACES = 1_000  # rows of popular_places: the candidates of a call for k up to this many places

_POPULAR = """
CREATE TEMP TABLE popular_now ON COMMIT DROP AS
SELECT v.id AS place, v.place_category, v.place_id, v.unique_users AS users
FROM ({pool}) k JOIN place_vectors v USING (place_category, place_id)
WHERE v.unique_users > 0
ORDER BY v.unique_users DESC, v.place_category, v.place_id
LIMIT %(popular)s
"""
_POOL_BATCH = "SELECT place_category, place_id FROM popular_places UNION SELECT place_category, place_id FROM new_pairs"
_POOL_ALL = "SELECT place_category, place_id FROM place_vectors"
_POPULAR_REPLACE = [
    """
DELETE FROM popular_places p
WHERE NOT EXISTS (SELECT 1 FROM popular_now n WHERE n.place_category = p.place_category AND n.place_id = p.place_id)
""",
    """
INSERT INTO popular_places AS t SELECT * FROM popular_now
ON CONFLICT (place_category, place_id) DO UPDATE SET place = EXCLUDED.place, users = EXCLUDED.users
WHERE (t.place, t.users) <> (EXCLUDED.place, EXCLUDED.users)
""",
]

_FRESH = """p.unique_users = 0 AND p.catalogue_sha256 IS NOT NULL AND p.content_vector IS NOT NULL
    AND p.content_model = %(model)s AND p.place_text_version = %(text_version)s"""
# the rows of `places` that no longer hold (a user came, the catalogue row went, the content changed)
_FRESH_DELETE = f"""
DELETE FROM fresh_places f USING ({{places}}) k JOIN place_vectors p USING (place_category, place_id)
WHERE f.place = p.id AND NOT ({_FRESH} AND f.content_vector = p.content_vector)
"""
_FRESH_INSERT = f"""
INSERT INTO fresh_places (place, place_category, place_id, content_vector)
SELECT p.id, p.place_category, p.place_id, p.content_vector
FROM ({{places}}) k JOIN place_vectors p USING (place_category, place_id)
WHERE {_FRESH}
ON CONFLICT (place) DO NOTHING
"""
_PLACES_BATCH = "SELECT place_category, place_id FROM batch_places"

_CENTRES = """
INSERT INTO serving_state AS t (id, behaviour_centre, content_centre)
SELECT true,
       (SELECT avg(l2_normalize(behavior_vector)) FROM place_vectors
        WHERE behavior_vector IS NOT NULL AND behavior_weight > 0),
       (SELECT avg(content_vector) FROM place_vectors
        WHERE content_vector IS NOT NULL AND content_model = %(model)s AND place_text_version = %(text_version)s)
ON CONFLICT (id) DO UPDATE SET
    behaviour_centre = EXCLUDED.behaviour_centre, content_centre = EXCLUDED.content_centre, updated_at = now()
"""


def refresh(conn: psycopg.Connection, space: VectorSpace, *, everything: bool) -> dict[str, Any]:
    """After the run's rows are written; `everything` remakes the tables from place_vectors."""
    everything = everything or conn.execute("SELECT NOT EXISTS (SELECT 1 FROM serving_state)").fetchone()[0]  # type: ignore[index]
    params = {**space.sql_params(), "popular": POPULAR_PLACES}
    conn.execute(_POPULAR.format(pool=_POOL_ALL if everything else _POOL_BATCH), params)  # type: ignore[arg-type]
    for statement in _POPULAR_REPLACE:
        conn.execute(statement)  # type: ignore[arg-type]
    places = _POOL_ALL if everything else _PLACES_BATCH
    # by difference: a row that still holds stays in the index
    removed = conn.execute(_FRESH_DELETE.format(places=places), params).rowcount  # type: ignore[arg-type]
    added = conn.execute(_FRESH_INSERT.format(places=places), params).rowcount  # type: ignore[arg-type]
    conn.execute(_CENTRES, params)  # type: ignore[arg-type]
    return {"fresh_places_added": added, "fresh_places_removed": removed}
