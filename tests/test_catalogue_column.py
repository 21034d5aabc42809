"""CATALOGUE_VECTOR_COLUMN on a catalogue shaped like the main server's: the sync writes our content
vectors into its vector column, only that column, a chunk at a time, never blocking a reader."""

from __future__ import annotations

import re
import threading
import time
import uuid
from dataclasses import replace

import numpy as np
import orjson
import psycopg
import pytest

from local_stack.sample_data import catalogue, install_catalogue
from reduce_job.vectors import record_space, stored_space
from tests.helpers import fresh_env, query, sync
from witple_batch.catalogue_column import CatalogueColumn, publish
from witple_batch.errors import ConfigError
from witple_batch.schema import migrate

PLACES = 120
COLUMN = {"CATALOGUE_VECTOR_COLUMN": "place_recommendations.vector"}
# rows whose column differs from the place's stored content vector without the space's direction
DIFFERENT = (
    "SELECT count(*) FROM place_recommendations c JOIN place_vectors p"
    " ON p.place_category = c.table_name AND p.place_id = c.place_id::text CROSS JOIN vector_space s"
    " WHERE c.vector IS DISTINCT FROM witple_without_direction(p.content_vector, s.content_direction)"
)
OTHER_COLUMNS = (
    "SELECT md5(string_agg(concat_ws('|', id, place_id, table_name, name, overview, region, city, category,"
    " bookmark_cnt), ',' ORDER BY id)) FROM place_recommendations"
)


def _main_servers_catalogue(url: str) -> None:
    """The sample catalogue with the main server's `vector vector(384)`, holding another model's vectors."""
    install_catalogue(url, catalogue(PLACES))
    rng = np.random.default_rng(12)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        conn.execute("ALTER TABLE place_recommendations ADD COLUMN vector vector(384)")
        for row_id in range(1, PLACES + 1):
            other_model = rng.standard_normal(384)
            conn.execute(
                "UPDATE place_recommendations SET vector = %s::vector WHERE id = %s",
                (str((other_model / np.linalg.norm(other_model)).tolist()), row_id),
            )


def _env(s3_env: dict[str, str], model_dir: str, url: str, **more: str) -> dict[str, str]:
    return {**fresh_env(s3_env, model_dir, DATABASE_URL=url, **more), "BATCH_ID": f"sync-{uuid.uuid4().hex[:10]}"}


def test_the_sync_writes_our_content_vectors_into_the_column_and_nothing_else(s3_env, model_dir, database_url):
    _main_servers_catalogue(database_url)
    others = query(database_url, OTHER_COLUMNS)
    sync(_env(s3_env, model_dir, database_url, **COLUMN), per_child=50)
    assert query(database_url, DIFFERENT) == [(0,)]
    assert query(database_url, "SELECT count(*) FROM place_recommendations WHERE vector IS NULL") == [(0,)]
    assert query(database_url, OTHER_COLUMNS) == others  # only the vector column was written
    recorded = query(
        database_url,
        "SELECT count(*) FROM place_vectors WHERE published_model = content_model"
        " AND published_text_sha256 = content_text_sha256",
    )
    assert recorded == [(PLACES,)]  # which model and text each row now holds

    versions = query(database_url, "SELECT id, xmin::text FROM place_recommendations ORDER BY id")
    with psycopg.connect(database_url, autocommit=True) as conn:
        again = publish(conn, CatalogueColumn("place_recommendations", "vector"))
    assert (again.written, again.places, again.complete) == (0, 0, True)
    assert query(database_url, "SELECT id, xmin::text FROM place_recommendations ORDER BY id") == versions

    direction = query(database_url, "SELECT content_direction::text FROM vector_space")
    with psycopg.connect(database_url, autocommit=True) as conn:  # an edit re-embeds, and the column follows
        conn.execute("UPDATE place_recommendations SET overview = overview || ' Now with a ferry.' WHERE id = 5")
    sync(_env(s3_env, model_dir, database_url, **COLUMN))
    assert query(database_url, DIFFERENT) == [(0,)]
    assert query(database_url, "SELECT content_direction::text FROM vector_space") == direction  # fixed per space


def _vectors(url: str, sql_text: str) -> np.ndarray:
    return np.array([np.array(orjson.loads(v)) for (v,) in query(url, sql_text)], dtype=np.float64)


def test_the_column_holds_content_vectors_without_the_spaces_mean_direction(s3_env, model_dir, database_url):
    """The main server's raw cosine against the column ranks places for a user as the cosine of the
    user's projection does: the shared direction no longer decides."""
    _main_servers_catalogue(database_url)
    sync(_env(s3_env, model_dir, database_url, **COLUMN))
    order = " ORDER BY p.place_category, p.place_id"
    content = _vectors(database_url, "SELECT p.content_vector::text FROM place_vectors p" + order)
    published = _vectors(
        database_url,
        "SELECT c.vector::text FROM place_vectors p JOIN place_recommendations c"
        " ON p.place_category = c.table_name AND p.place_id = c.place_id::text" + order,
    )
    direction = content.mean(0) / np.linalg.norm(content.mean(0))
    expected = content - np.outer(content @ direction, direction)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(published, expected, atol=2e-6)
    assert np.mean((content @ content.T)[np.triu_indices(PLACES, 1)]) > 0.2  # the shared direction, before
    assert np.abs(published @ direction).max() < 1e-5

    with psycopg.connect(database_url, autocommit=True) as conn:
        space = stored_space(conn)
        assert space is not None and space.weights is not None
        record_space(conn, replace(space, weights=replace(space.weights, like=space.weights.like + 1)))
        assert query(database_url, "SELECT content_direction IS NULL FROM vector_space") == [(False,)]
        record_space(conn, replace(space, model="another-model"))  # a new space: a new direction, later
        assert query(database_url, "SELECT content_direction IS NULL FROM vector_space") == [(True,)]
        record_space(conn, space)
        # 2 of the 120 catalogued places still in another space: more than 1% missing, no direction yet
        moved = "UPDATE place_vectors SET content_model = %s WHERE place_id IN ('100001', '100002')"
        conn.execute(moved, ("another-model",))
        waiting = publish(conn, CatalogueColumn("place_recommendations", "vector"))
        assert (waiting.places, waiting.complete) == (0, True)
        assert query(database_url, "SELECT content_direction IS NULL FROM vector_space") == [(True,)]
        conn.execute(moved, (space.model,))
        again = publish(conn, CatalogueColumn("place_recommendations", "vector"))
    assert (again.places, again.complete) == (PLACES, True)  # a new direction writes every row again
    assert query(database_url, DIFFERENT) == [(0,)]
    assert query(database_url, "SELECT content_direction_version FROM vector_space") == [(2,)]


def test_the_direction_waits_for_the_whole_catalogue_and_the_column_until_then(s3_env, model_dir, database_url):
    """A bounded sync run stores part of the catalogue: its mean is not the catalogue's, so it fixes no
    direction and the column keeps what it held, however many of the stored places are in the space."""
    _main_servers_catalogue(database_url)
    before = query(database_url, "SELECT id, vector::text FROM place_recommendations ORDER BY id")
    first = sync(_env(s3_env, model_dir, database_url, **COLUMN), per_child=50, max_children=1)
    assert (first["places"], first["more"]) == (50, True)
    assert query(database_url, "SELECT content_direction IS NULL FROM vector_space") == [(True,)]
    assert query(database_url, "SELECT id, vector::text FROM place_recommendations ORDER BY id") == before
    sync(_env(s3_env, model_dir, database_url, **COLUMN))  # the rest of the catalogue
    assert query(database_url, "SELECT content_direction IS NULL FROM vector_space") == [(False,)]
    assert query(database_url, DIFFERENT) == [(0,)]


def test_a_pass_reads_on_by_key_and_writes_every_row_in_small_chunks(s3_env, model_dir, database_url):
    _main_servers_catalogue(database_url)
    sync(_env(s3_env, model_dir, database_url))  # vectors stored, the column not yet written
    with psycopg.connect(database_url, autocommit=True) as conn:
        done = publish(conn, CatalogueColumn("place_recommendations", "vector"), chunk=7)
    assert (done.written, done.places, done.complete) == (PLACES, PLACES, True)
    assert query(database_url, DIFFERENT) == [(0,)]


def test_without_the_setting_the_column_keeps_the_main_servers_vectors(s3_env, model_dir, database_url):
    _main_servers_catalogue(database_url)
    before = query(database_url, "SELECT id, vector::text FROM place_recommendations ORDER BY id")
    sync(_env(s3_env, model_dir, database_url))
    assert query(database_url, "SELECT id, vector::text FROM place_recommendations ORDER BY id") == before


def test_a_locked_row_stops_the_pass_within_lock_timeout_and_readers_never_wait(s3_env, model_dir, database_url):
    _main_servers_catalogue(database_url)
    sync(_env(s3_env, model_dir, database_url))  # vectors stored, the column not yet written
    target = CatalogueColumn("place_recommendations", "vector")
    reads: list[float] = []
    stop = threading.Event()

    def read_like_the_main_server() -> None:
        with psycopg.connect(database_url, autocommit=True) as reader:
            while not stop.is_set():
                started = time.perf_counter()
                reader.execute("SELECT id, vector <=> vector, bookmark_cnt FROM place_recommendations").fetchall()
                reads.append(time.perf_counter() - started)
                time.sleep(0.02)

    with psycopg.connect(database_url) as holder, psycopg.connect(database_url, autocommit=True) as conn:
        holder.execute("SELECT 1 FROM place_recommendations WHERE id = 60 FOR UPDATE")  # the main server writing
        conn.execute("SET lock_timeout = '1s'")
        reader = threading.Thread(target=read_like_the_main_server)
        reader.start()
        started = time.perf_counter()
        try:
            stopped = publish(conn, target, chunk=20)
        finally:
            seconds = time.perf_counter() - started
            stop.set()
            reader.join()
        holder.rollback()
        assert not stopped.complete and 0 < stopped.places < PLACES  # the chunks before the locked row
        assert seconds < 3.0
        assert reads and max(reads) < 0.5, max(reads)
        assert query(database_url, DIFFERENT) == [(PLACES - stopped.places,)]
        rest = publish(conn, target, chunk=20)
    assert rest.complete and stopped.places + rest.places == PLACES
    assert query(database_url, DIFFERENT) == [(0,)]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("vector", "CATALOGUE_VECTOR_COLUMN must be table.column"),
        ("place_recommendations.name", "place_recommendations.name must be vector(384), found character varying"),
        ("place_recommendations.nothing", "must be vector(384), found no such column"),
        ("no_such_table.vector", "no table no_such_table"),
    ],
)
def test_a_column_that_cannot_hold_our_vectors_is_refused_by_name(database_url, value, message):
    _main_servers_catalogue(database_url)
    with pytest.raises(ConfigError, match=re.escape(message)), psycopg.connect(database_url, autocommit=True) as conn:
        migrate(conn)
        column = CatalogueColumn.from_env({"CATALOGUE_VECTOR_COLUMN": value})
        assert column is not None
        column.check(conn)


@pytest.mark.parametrize("value", ["", "none"])
def test_unset_or_none_is_off_as_the_stacks_default_says(value):
    assert CatalogueColumn.from_env({"CATALOGUE_VECTOR_COLUMN": value}) is None
    assert CatalogueColumn.from_env({}) is None
