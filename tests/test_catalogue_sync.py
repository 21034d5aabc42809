"""The catalogue sync on real services: every catalogue place stored in the children's space before
anyone acts on it, edits found by one comparison in SQL, from a table, an export or nowhere."""

from __future__ import annotations

import gzip
import uuid
from collections.abc import Iterator

import orjson
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from local_stack.sample_data import catalogue, generate, install_catalogue
from tests.helpers import fresh_env, pipeline, plan_sync, query, run_module, sync
from tests.test_reduce_job import assert_vectors_follow_stored_content
from witple_batch import catalogue as catalogue_module
from witple_batch.place_text import CatalogueEntry, place_text, text_sha256
from witple_batch.run_layout import RunLayout, load_report
from witple_batch.s3 import s3_client
from witple_batch.schema import migrate
from witple_batch.settings import common_from_env

PLACES = 200
STORED = (
    "SELECT place_category, place_id, catalogue_sha256, content_text_sha256, total_actions, unique_users,"
    " behavior_vector IS NULL, combined_vector = content_vector, xmin::text FROM place_vectors"
)


def _run(env: dict[str, str]) -> dict[str, str]:
    return {**env, "BATCH_ID": f"sync-{uuid.uuid4().hex[:10]}"}


def _stored(url: str) -> dict[tuple[str, str], tuple]:
    return {(c, p): tuple(rest) for c, p, *rest in query(url, STORED)}


def _catalogue_rows(url: str) -> dict[tuple[str, str], CatalogueEntry]:
    rows = query(
        url, "SELECT table_name, place_id::text, name, overview, region, city, category FROM place_recommendations"
    )
    return {(c, p): CatalogueEntry(*fields) for c, p, *fields in rows}


def _report(env: dict[str, str]) -> dict:
    common = common_from_env(env)
    layout = RunLayout(common.work_bucket, common.work_prefix, env["BATCH_ID"])
    return load_report(s3_client(common.region), layout)  # type: ignore[return-value]


@pytest.fixture
def migrated(database_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        migrate(conn)
        yield conn


texts = st.one_of(st.none(), st.text(st.characters(exclude_characters="\x00", codec="utf-8"), max_size=30))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fields=st.tuples(texts, st.one_of(texts, st.text("ab한", min_size=3995, max_size=4010)), texts, texts, texts))
def test_the_fingerprint_is_the_same_in_sql_and_python(migrated, fields):
    [(in_sql,)] = migrated.execute("SELECT witple_catalogue_sha256(%s, %s, %s, %s, %s)", fields).fetchall()
    assert bytes(in_sql) == CatalogueEntry(*fields).sha256()


def test_a_first_sync_stores_every_catalogue_place_with_zero_statistics(s3_env, model_dir, database_url):
    install_catalogue(database_url, catalogue(PLACES))
    env = fresh_env(s3_env, model_dir, DATABASE_URL=database_url)
    planned = sync(_run(env), per_child=80)
    assert (planned["places"], planned["shards"], planned["files"], planned["more"]) == (PLACES, 3, 0, False)
    stored, entries = _stored(database_url), _catalogue_rows(database_url)
    assert set(stored) == set(entries)
    for key, (sha, text_sha, actions, users, no_behaviour, combined_is_content, _) in stored.items():
        assert bytes(sha) == entries[key].sha256()
        assert bytes(text_sha) == text_sha256(place_text(key[0], entries[key]))
        assert (actions, users, no_behaviour, combined_is_content) == (0, 0, True, True)
    assert plan_sync(_run(env), dry_run=True)["places"] == 0  # an unchanged catalogue: nothing to embed

    hourly = _run(env)
    pipeline(hourly, generate(actions=1_500, users=100, places=PLACES, seed=3, malformed_files=0))
    stats = _report(hourly)["stats"]
    assert (stats["texts_embedded"], stats["places_uncatalogued"]) == (0, 0)  # the batch only reads vectors
    assert_vectors_follow_stored_content(database_url)


def test_a_one_percent_edit_embeds_exactly_the_edited_and_the_new_rows(s3_env, model_dir, database_url):
    install_catalogue(database_url, catalogue(PLACES))
    env = fresh_env(s3_env, model_dir, DATABASE_URL=database_url)
    sync(_run(env))
    before = _stored(database_url)
    with psycopg.connect(database_url, autocommit=True) as conn:
        edited = conn.execute(
            "UPDATE place_recommendations SET overview = overview || ' Closed on Mondays.'"
            " WHERE id IN (7, 150) RETURNING table_name, place_id::text"
        ).fetchall()
        conn.execute(
            "INSERT INTO place_recommendations (place_id, table_name, name, overview, region, city, category)"
            " VALUES (990001, 'nature', 'Quiet Bay', 'A bay with no clicks yet.', 'Jeju', 'Seogwipo', 'nature')"
        )
        conn.execute("UPDATE place_recommendations SET bookmark_cnt = 5 WHERE id = 9")  # not a text field
    planned = sync(_run(env))
    assert planned["places"] == 3
    after, entries = _stored(database_url), _catalogue_rows(database_url)
    changed = {key for key in before if before[key] != after[key]}
    assert changed == set(edited)
    assert set(after) - set(before) == {("nature", "990001")}
    for key in changed | {("nature", "990001")}:
        assert bytes(after[key][0]) == entries[key].sha256()
        assert bytes(after[key][1]) == text_sha256(place_text(key[0], entries[key]))
    assert plan_sync(_run(env), dry_run=True)["places"] == 0


def test_a_place_removed_from_the_catalogue_gets_its_fallback_text_and_is_no_longer_new(
    s3_env, model_dir, database_url
):
    install_catalogue(database_url, catalogue(PLACES))
    env = fresh_env(s3_env, model_dir, DATABASE_URL=database_url)
    pipeline(_run(env), generate(actions=1_500, users=100, places=PLACES // 2, seed=3, malformed_files=0))
    sync(_run(env))
    stored = _stored(database_url)
    acted = next(key for key in sorted(stored) if stored[key][3] > 0)
    user = query(database_url, "SELECT user_id FROM user_behavior_vectors ORDER BY user_id LIMIT 1")[0][0]
    scores = {(c, p): s for c, p, s in query(database_url, "SELECT * FROM recommend_places(%s, 10000)", (user,))}
    fresh = max((key for key in scores if stored[key][3] == 0), key=scores.__getitem__)
    assert scores[fresh] > 0  # recommended as a new place
    with psycopg.connect(database_url, autocommit=True) as conn:
        for category, place_id in (acted, fresh):
            conn.execute(
                "DELETE FROM place_recommendations WHERE table_name = %s AND place_id::text = %s", (category, place_id)
            )
    assert sync(_run(env))["places"] == 2
    after = _stored(database_url)
    assert {key for key in stored if after[key][:2] != stored[key][:2]} == {acted, fresh}  # only they re-embedded
    for key in (acted, fresh):
        assert after[key][0] is None  # no catalogue row
        assert bytes(after[key][1]) == text_sha256(place_text(key[0], None))
        assert after[key][2:4] == stored[key][2:4]  # statistics kept
    assert plan_sync(_run(env), dry_run=True)["places"] == 0
    scores = {(c, p): s for c, p, s in query(database_url, "SELECT * FROM recommend_places(%s, 10000)", (user,))}
    assert fresh not in scores  # a place no one acted on is new only while the catalogue has it
    assert_vectors_follow_stored_content(database_url)

    with psycopg.connect(database_url, autocommit=True) as conn:  # a catalogue emptied for a reload
        conn.execute("DELETE FROM place_recommendations WHERE id > 20")
    kept = len(_catalogue_rows(database_url))
    assert plan_sync(_run(env), dry_run=True)["places"] == 0  # most of them missing: an accident, left alone
    assert plan_sync(_run(env), dry_run=True, max_removed_share=1.0)["places"] == PLACES - 2 - kept


def test_places_met_before_the_catalogue_knew_them_are_synced_with_their_statistics(s3_env, model_dir, database_url):
    env = fresh_env(s3_env, model_dir, DATABASE_URL=database_url)
    sample = generate(actions=1_000, users=80, places=60, seed=5, malformed_files=0)
    pipeline(_run(env), sample)  # no catalogue yet: fallback texts
    before = _stored(database_url)
    assert all(sha is None for sha, *_ in before.values())
    install_catalogue(database_url, catalogue(60))
    planned = sync(_run(env))
    assert planned["places"] == 60
    after = _stored(database_url)
    assert all(after[key][2:4] == before[key][2:4] for key in before)  # totals and users kept
    assert all(after[key][0] is not None and after[key][1] != before[key][1] for key in before)
    assert_vectors_follow_stored_content(database_url)  # user vectors follow the new content


def test_a_catalogue_that_repeats_a_place_is_synced_once(s3_env, model_dir, database_url):
    install_catalogue(database_url, catalogue(20))
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO place_recommendations (place_id, table_name, name, overview, region, city, category)"
            " SELECT place_id, table_name, 'Another ' || name, overview, region, city, category"
            " FROM place_recommendations WHERE id <= 5"
        )
    env = fresh_env(s3_env, model_dir, DATABASE_URL=database_url)
    assert sync(_run(env))["places"] == 20
    assert plan_sync(_run(env), dry_run=True)["places"] == 0  # the same row chosen by the sync and the shard


def test_an_export_is_compared_a_chunk_at_a_time(s3_env, model_dir, database_url, monkeypatch):
    env = fresh_env(s3_env, model_dir, DATABASE_URL=database_url)
    rows = [
        {"place_id": r.place_id, "table_name": r.table_name, "name": r.name, "overview": r.overview}
        | {"region": r.region, "city": r.city, "category": r.category}
        for r in catalogue(50)
    ]
    client = s3_client(env["AWS_REGION"])

    def export(rows: list[dict]) -> None:
        body = gzip.compress(b"".join(orjson.dumps(r) + b"\n" for r in rows), mtime=0)
        client.put_object(Bucket=env["WORK_BUCKET"], Key="catalogue.jsonl.gz", Body=body)

    export(rows)
    env["CATALOGUE_SOURCE"] = f"s3://{env['WORK_BUCKET']}/catalogue.jsonl.gz"
    monkeypatch.setattr(catalogue_module, "LOOKUP_CHUNK", 7)
    assert sync(_run(env), per_child=30)["places"] == 50  # 50 rows in chunks of 7, two children
    assert len(_stored(database_url)) == 50
    rows[3]["name"] = "Renamed"
    removed = rows.pop(40)
    export(rows)
    assert plan_sync(_run(env), dry_run=True)["places"] == 2  # the renamed row and the removed one
    assert plan_sync(_run(env), dry_run=True, per_child=1, max_children=1)["places"] == 1
    assert sync(_run(env))["places"] == 2
    assert _stored(database_url)[(removed["table_name"], str(removed["place_id"]))][0] is None
    assert plan_sync(_run(env), dry_run=True)["places"] == 0


def test_without_a_catalogue_there_is_nothing_to_sync(s3_env, model_dir, database_url):
    install_catalogue(database_url, catalogue(20))
    env = fresh_env(s3_env, model_dir, DATABASE_URL=database_url, CATALOGUE_SOURCE="none")
    assert plan_sync(_run(env), dry_run=True)["places"] == 0
    missing = run_module("coordinator", {**env, "CATALOGUE_SOURCE": "table:not_there"}, "sync", "--dry-run")
    assert missing.returncode == 2
    assert "CATALOGUE_SOURCE table:not_there cannot be read" in missing.stderr.strip().splitlines()[-1]
