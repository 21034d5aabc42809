"""Vectors that mean something, on real services: catalogue text, one embedding space, the same
vectors whatever the batch boundaries, and recommend_places; all against tests/vector_oracle.py."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import math
import shutil
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import orjson
import psycopg
import pytest
from pgvector.psycopg import register_vector

from local_stack.sample_data import SampleFile, SampleSet, catalogue, generate, install_catalogue, place_key
from reduce_job import vector_sums
from reduce_job.consolidate import ConsolidationSettings, consolidate
from tests.helpers import (
    fresh_env,
    load_partial,
    pipeline,
    plan_run,
    plan_sync,
    query,
    reduce_in_process,
    run_child,
    run_module,
    seed,
    sync,
)
from tests.vector_oracle import assert_close, assert_follows_the_definition, expected, stored, stored_sums
from witple_batch.catalogue import FIELDS
from witple_batch.model_files import MANIFEST_FILE, MODEL_FILE, TOKENIZER_FILE, read_manifest
from witple_batch.model_source import ModelSource
from witple_batch.place_text import PLACE_TEXT_VERSION, CatalogueEntry, place_text, text_sha256
from witple_batch.s3 import s3_client
from witple_batch.settings import common_from_env

WEIGHTS = (2.0, 4.0, 7.0)
ONE_PLACE = (
    "SELECT content_text_sha256, content_vector::text FROM place_vectors WHERE place_category = %s AND place_id = %s"
)
PLACES = 80
WINDOW = 20  # NEIGHBOUR_WINDOW's default


def _with_zero_weights(sample: SampleSet) -> SampleSet:
    """A user with only unknown action types, on a place nobody weighs: no user vector, content-only combined."""
    actions = [
        {"user_id": "only-shares", "place_category": "nature", "place_id": "zero-place", "action_type": "share"},
        {"user_id": "only-shares", "place_category": "nature", "place_id": "zero-place", "action_type": "view"},
    ]
    key = "user-actions/year=2025/month=01/day=15/hour=15/batch-1736953200000-2-zeroweig.json"
    return SampleSet([*sample.files, SampleFile(key, orjson.dumps({"actions": actions}))], sample.expected)


@pytest.fixture(scope="module")
def sample() -> SampleSet:
    return _with_zero_weights(generate(actions=3_000, users=200, places=PLACES, seed=41, batch_size=40))


@pytest.fixture(scope="module")
def second() -> SampleSet:
    start = datetime(2025, 1, 17, 9, tzinfo=UTC)
    return generate(actions=1_500, users=200, places=PLACES, seed=42, batch_size=40, start=start, malformed_files=0)


def _env(s3_env, model_dir, url, **extra) -> dict[str, str]:
    install_catalogue(url, catalogue(PLACES))
    return fresh_env(s3_env, model_dir, DATABASE_URL=url, ACTION_WEIGHTS="click=2,like=4,bookmark=7", **extra)


def _batch(env: dict[str, str], **extra: str) -> dict[str, str]:
    return {**env, "BATCH_ID": f"v-{uuid.uuid4().hex[:10]}", **extra}


def _model(env: dict[str, str]) -> str:
    return read_manifest(Path(env["MODEL_DIR"])).onnx_sha256


def _assert_follows_the_definition(env: dict[str, str], model: str, pairs_per_chunk: int = 200_000) -> None:
    """Users at once; places once consolidated (in process: a test's block sizes hold there too)."""
    url = env["DATABASE_URL"]
    assert_close(stored(url).users, expected(url, WEIGHTS, model, PLACE_TEXT_VERSION).users, "user vector")
    consolidate(common_from_env(env), ConsolidationSettings(every_hours=24, pairs_per_chunk=pairs_per_chunk))
    assert_follows_the_definition(url, WEIGHTS, model, PLACE_TEXT_VERSION)


def other_export(model_dir: Path, into: Path) -> Path:
    """The same network saved again with another doc string: another model.onnx sha256, as a new export would be."""
    import onnx

    into.mkdir(parents=True, exist_ok=True)
    model = onnx.load(str(model_dir / MODEL_FILE))
    model.doc_string = "another export"
    onnx.save(model, str(into / MODEL_FILE))
    shutil.copy(model_dir / TOKENIZER_FILE, into / TOKENIZER_FILE)
    manifest = json.loads((model_dir / MANIFEST_FILE).read_text())
    manifest["onnx_sha256"] = hashlib.sha256((into / MODEL_FILE).read_bytes()).hexdigest()
    (into / MANIFEST_FILE).write_text(json.dumps(manifest))
    return into


def test_one_batch_or_24_give_the_same_vectors_once_the_places_are_consolidated(s3_env, model_dir, postgres, sample):
    """Users are exact every hour, from their running sums; places lag their returning users until a
    consolidation, and then equal the one-batch database's and the definition's."""
    one, split_url = postgres.new_database(), postgres.new_database()
    env = _env(s3_env, model_dir, one)
    pipeline(env, sample, shards=2)
    split = _env(s3_env, model_dir, split_url)
    files = sorted(sample.files, key=lambda f: f.key)
    for index in range(24):
        part = files[index * len(files) // 24 : (index + 1) * len(files) // 24]
        pipeline(_batch(split), SampleSet(part, sample.expected), shards=index % 2 + 1)
    a, b = stored(one), stored(split_url)
    assert_close(a.users, b.users, "user vector")
    wanted = expected(split_url, WEIGHTS, _model(env), PLACE_TEXT_VERSION)
    sums = stored_sums(split_url)
    assert set(sums) == {u for u, v in wanted.users.items() if v is not None}
    for user, (content_sum, weight) in sums.items():
        assert weight == pytest.approx(wanted.weights[user], rel=1e-12), user
        mean = wanted.users[user]
        cosine = content_sum @ mean / (np.linalg.norm(content_sum) * np.linalg.norm(mean))  # type: ignore[operator]
        assert cosine >= 0.999999, (user, cosine)
    lagging = query(split_url, "SELECT count(*) FROM user_content_sums WHERE placed_vector IS NOT NULL")[0][0]
    moved = [k for k, v in a.behaviour.items() if v is not None and np.abs(v - b.behaviour[k]).max() > 1e-4]
    assert lagging > 0 and moved  # the places hold what their returning users were before

    done = run_module("reduce_job", split, "consolidate")
    assert done.returncode == 0, done.stderr
    assert orjson.loads(done.stdout)["users"] == lagging
    b = stored(split_url)
    assert_close(a.behaviour, b.behaviour, "place behaviour vector")
    assert_close(a.combined, b.combined, "combined vector")
    totals = "SELECT sum(total_actions), sum(total_other), sum(unique_users), sum(vector_weight) FROM place_vectors"
    assert query(one, totals) == query(split_url, totals)
    assert query(split_url, "SELECT count(*) FROM user_content_sums WHERE placed_vector IS NOT NULL") == [(0,)]
    _assert_follows_the_definition(env, _model(env))
    _assert_follows_the_definition(split, _model(env))
    assert a.users["only-shares"] is None  # only unknown types: weight 0, no vector
    zero = ("nature", "zero-place")
    assert a.behaviour[zero] is None
    np.testing.assert_allclose(a.combined[zero], a.content[zero], atol=1e-6)  # content alone
    assert query(one, "SELECT total_other FROM user_behavior_vectors WHERE user_id = 'only-shares'") == [(2,)]


def _count_paths(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """How many vector_sums._add_products calls had pairs, and how many of them gathered the pairs."""
    calls: Counter[str] = Counter()
    add, gather = vector_sums._add_products, vector_sums._sum_by_key

    def counted_add(out, keys, *rest):
        calls["sums"] += bool(len(keys))
        add(out, keys, *rest)

    def counted_gather(*args):
        calls["gathered"] += 1
        return gather(*args)

    monkeypatch.setattr(vector_sums, "_add_products", counted_add)
    monkeypatch.setattr(vector_sums, "_sum_by_key", counted_gather)
    return calls


@pytest.mark.parametrize(
    ("dense_fill", "gathered"),
    [(0.0, "none"), (0.3, "some"), (math.inf, "all")],
    ids=["matrix-products", "mixed", "gathers"],
)
def test_small_blocks_and_place_passes_leave_every_vector_as_it_was(
    s3_env, model_dir, postgres, sample, monkeypatch, dense_fill, gathered
):
    """The blocked product's memory bounds (user blocks, place passes, gathers, content cache) change no
    vector, whether blocks are summed as matrix products, gathered pair by pair, or some each way."""
    whole, blocked = postgres.new_database(), postgres.new_database()
    env = _env(s3_env, model_dir, whole)
    pipeline(env, sample, shards=2)
    small = {
        "PAIRS_PER_BLOCK": 40,
        "PLACES_PER_PASS": 7,
        "GATHER_ROWS": 16,
        "CONTENT_CACHE": 10,
        "DENSE_FILL": dense_fill,
    }
    for name, value in small.items():
        monkeypatch.setattr(vector_sums, name, value)
    paths = _count_paths(monkeypatch)
    split = _env(s3_env, model_dir, blocked)
    files = sorted(sample.files, key=lambda f: f.key)
    for part in (files[:30], files[30:]):  # everything computed, then a batch's deltas
        pipeline(_batch(split), SampleSet(part, sample.expected), shards=1)
    counted = "SELECT count(*), count(DISTINCT (place_category, place_id)) FROM user_place_interactions"
    pairs, places = query(blocked, counted)[0]
    assert pairs > 10 * small["PAIRS_PER_BLOCK"] and places > 5 * small["PLACES_PER_PASS"]
    share = {"none": paths["gathered"] == 0, "some": 0 < paths["gathered"] < paths["sums"]}
    assert paths["sums"] > 0 and share.get(gathered, paths["gathered"] == paths["sums"]), paths
    _assert_follows_the_definition(split, _model(env), pairs_per_chunk=small["PAIRS_PER_BLOCK"])
    a, b = stored(whole), stored(blocked)
    assert_close(b.users, a.users, "user vector")
    assert_close(b.behaviour, a.behaviour, "place behaviour vector")
    assert_close(b.combined, a.combined, "combined vector")


@pytest.mark.parametrize(
    ("dense_fill", "matrix_cells", "keys", "rows", "gathered"),
    [
        (0.0, vector_sums.MATRIX_CELLS, 40, 30, False),
        (vector_sums.DENSE_FILL, vector_sums.MATRIX_CELLS, 40, 30, False),
        (vector_sums.DENSE_FILL, vector_sums.MATRIX_CELLS, 100, 3000, True),
        (vector_sums.DENSE_FILL, 40 * 30 - 1, 40, 30, True),
        (math.inf, vector_sums.MATRIX_CELLS, 40, 30, True),
    ],
    ids=["matrix", "full-by-fill", "sparse-by-fill", "full-over-matrix-cells", "gather"],
)
def test_products_sum_every_pair_as_a_matrix_or_gathered(monkeypatch, dense_fill, matrix_cells, keys, rows, gathered):
    """Repeated pairs add up, signs hold, tiles smaller than the matrix leave nothing out, and the fill
    chooses the path (500 pairs: 0.42 full over 40 keys x 30 rows, 1.1% over 100 x ~460 of 3,000), unless
    the matrix would be over MATRIX_CELLS."""
    monkeypatch.setattr(vector_sums, "GATHER_ROWS", 16)
    monkeypatch.setattr(vector_sums, "DENSE_FILL", dense_fill)
    monkeypatch.setattr(vector_sums, "MATRIX_CELLS", matrix_cells)
    paths = _count_paths(monkeypatch)
    rng = np.random.default_rng(3)
    pair_keys = np.r_[rng.integers(0, keys, 500), 7, 7]  # out has 20 more keys: left as they were
    rows_ = np.r_[rng.integers(0, rows, 500), 2, 2]
    weights = np.r_[rng.normal(size=500), 1.5, -0.25]
    vectors = rng.normal(size=(rows, 384)).astype(np.float32)
    wanted = np.zeros((keys + 20, 384))
    np.add.at(wanted, pair_keys, weights[:, None] * vectors[rows_].astype(np.float64))
    out = np.ones((keys + 20, 384))
    vector_sums._add_products(out, pair_keys, vectors, rows_, weights)
    np.testing.assert_allclose(out - 1, wanted, atol=1e-5)
    assert paths == Counter(sums=1, gathered=int(gathered))
    vector_sums._add_products(out, pair_keys[:0], vectors, rows_[:0], weights[:0])  # no pairs: nothing moves
    np.testing.assert_allclose(out - 1, wanted, atol=1e-5)


def test_an_edited_catalogue_row_is_re_embedded_and_matches_a_rebuild(s3_env, model_dir, database_url, sample, second):
    env = _env(s3_env, model_dir, database_url)
    pipeline(env, sample, shards=2)
    category, place_id = place_key(0)  # the most popular place: both days act on it
    before = query(
        database_url,
        ONE_PLACE,
        (category, str(place_id)),
    )
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE place_recommendations SET name = 'Renamed Observatory', overview = 'Stars, telescopes and"
            " a planetarium show every night.' WHERE table_name = %s AND place_id = %s",
            (category, place_id),
        )
    later = _batch(env)
    pipeline(later, second, shards=2)
    after = query(
        database_url,
        ONE_PLACE,
        (category, str(place_id)),
    )
    entry = CatalogueEntry(
        name="Renamed Observatory",
        overview="Stars, telescopes and a planetarium show every night.",
        region=catalogue(PLACES)[0].region,
        city=catalogue(PLACES)[0].city,
        category=catalogue(PLACES)[0].category,
    )
    assert after[0][0] == text_sha256(place_text(category, entry)) != before[0][0]
    assert after[0][1] != before[0][1]
    _assert_follows_the_definition(env, _model(env))
    incremental = stored(database_url)
    rebuilt = run_module("reduce_job", env, "rebuild-vectors")
    assert rebuilt.returncode == 0, rebuilt.stderr[-2000:]
    assert json.loads(rebuilt.stdout)["vectors"]["mode"] == "everything"
    fresh = stored(database_url)
    assert_close(incremental.users, fresh.users, "user vector")
    assert_close(incremental.behaviour, fresh.behaviour, "place behaviour vector")
    assert_close(incremental.combined, fresh.combined, "combined vector")


def test_a_model_change_leaves_no_vector_blended_across_models(
    s3_env, model_dir, database_url, sample, second, tmp_path
):
    env = _env(s3_env, model_dir, database_url)
    pipeline(env, sample, shards=2)
    old, new = _model(env), read_manifest(other_export(model_dir, tmp_path / "b")).onnx_sha256
    files = sorted(second.files, key=lambda f: f.key)
    exported = {"MODEL_DIR": str(tmp_path / "b")}
    first_b = _batch(env, **exported)
    seed(first_b, SampleSet(files[:5], second.expected))
    assert plan_run(first_b, shards=1)["places"] == 0  # a file run embeds what it meets, nothing more
    run_child(first_b, 0)
    reduce_in_process(first_b)
    models = stored(database_url).content_model
    assert {old, new} == set(models.values())  # places this batch did not touch keep the old export's vectors
    _assert_follows_the_definition(env, new)  # ... and count in no vector: nothing is blended
    assert all(v is None for k, v in stored(database_url).combined.items() if models[k] == old)

    syncing = _batch(env, **exported)
    stale = sum(1 for m in models.values() if m == old)
    per = math.ceil(stale / 4)
    planned = plan_sync(syncing, per_child=per)
    assert stale >= 20 and (planned["places"], planned["shards"], planned["files"]) == (stale, 4, 0)
    # while `syncing` is live, another sync names no place: its children may be embedding them
    assert plan_sync(_batch(env, **exported), per_child=per, dry_run=True)["places"] == 0
    done = [run_child(syncing, index) for index in range(planned["shards"])]
    assert {m["files"] for m in done} == {0} and max(m["places"] for m in done) <= per
    assert sum(m["places"] for m in done) == stale  # the places are dealt round the children, each once
    reduce_in_process(syncing)
    assert set(stored(database_url).content_model.values()) == {new}  # every place reached the new space
    _assert_follows_the_definition(env, new)


def test_a_new_exports_first_sync_brings_every_place_over(s3_env, model_dir, database_url, sample, second, tmp_path):
    env = _env(s3_env, model_dir, database_url)
    pipeline(env, sample, shards=2)
    old, new = _model(env), read_manifest(other_export(model_dir, tmp_path / "b")).onnx_sha256
    places = len(stored(database_url).content_model)
    deploy = _batch(env, MODEL_DIR=str(tmp_path / "b"))
    # a planner that cannot read the children's model follows the last applied space: nothing to bring over
    unknown = plan_sync(deploy, model=ModelSource(tmp_path / "not-there", None), dry_run=True)
    assert (unknown["places"], unknown["space"]) == (0, {"model": old, "text_version": PLACE_TEXT_VERSION})
    capped = plan_sync(deploy, per_child=1, max_children=2, dry_run=True)
    assert (capped["places"], capped["shards"], capped["more"]) == (2, 2, True)  # the rest in the next sync
    from_image = run_module("coordinator", deploy, "sync", "--dry-run")  # reads MODEL_DIR's manifest
    assert from_image.returncode == 0 and json.loads(from_image.stdout)["places"] == places
    planned = sync(deploy)
    assert (planned["places"], planned["shards"], planned["more"]) == (places, 1, False)  # one child takes them
    assert planned["space"] == {"model": new, "text_version": PLACE_TEXT_VERSION}
    assert set(stored(database_url).content_model.values()) == {new}
    _assert_follows_the_definition(env, new)
    assert plan_sync(_batch(env, MODEL_DIR=str(tmp_path / "b")), dry_run=True)["places"] == 0  # in step


def test_a_planner_reading_another_model_than_the_children_follows_the_applied_space(
    s3_env, model_dir, database_url, sample, second, tmp_path
):
    env = _env(s3_env, model_dir, database_url)
    pipeline(env, sample, shards=2)
    places = len(stored(database_url).content_model)
    elsewhere = ModelSource(other_export(model_dir, tmp_path / "b"), None)  # the coordinator's, not the children's
    first = _batch(env)
    assert plan_sync(first, model=elsewhere)["places"] == places  # it cannot know yet
    child = run_child(first, 0)
    assert (child["texts_embedded"], child["places_reused"]) == (0, child["places"])  # a wasted run, nothing moved
    reduce_in_process(first)
    # the last run was planned for `elsewhere` and applied the children's model: the planner sees it,
    # and each run records what it read again, so the next one sees it too
    files = sorted(second.files, key=lambda f: f.key)
    for later in (files[:5], files[5:10]):
        run = _batch(env)
        seed(run, SampleSet(later, second.expected))
        plan_run(run, shards=1, model=elsewhere)
        run_child(run, 0)
        reduce_in_process(run)
        planned = plan_sync(_batch(env), model=elsewhere, dry_run=True)
        assert (planned["places"], planned["space"]) == (0, {"model": _model(env), "text_version": PLACE_TEXT_VERSION})
    _assert_follows_the_definition(env, _model(env))


def test_recommend_places_follows_its_formula_and_leaves_out_what_the_user_did(s3_env, model_dir, database_url, sample):
    env = _env(s3_env, model_dir, database_url)
    pipeline(env, sample, shards=2)
    [(user,)] = query(database_url, "SELECT user_id FROM user_behavior_vectors ORDER BY total_actions DESC LIMIT 1")
    rows = query(database_url, "SELECT place_category, place_id, score FROM recommend_places(%s, 20)", (user,))
    with psycopg.connect(database_url) as conn:
        register_vector(conn)
        places = conn.execute(
            "SELECT place_category, place_id, behavior_vector, unique_users FROM place_vectors"
        ).fetchall()
        recent = conn.execute(
            "SELECT place_category, place_id, clicks * 2 + likes * 4 + bookmarks * 7 FROM user_place_interactions"
            " WHERE user_id = %s ORDER BY last_action_at DESC NULLS LAST, place_category DESC, place_id DESC",
            (user,),
        ).fetchall()[:5]
        pairs = conn.execute(
            "SELECT user_id, place_category, place_id FROM user_place_interactions ORDER BY user_id, position"
        ).fetchall()
    stored = {(c, p): v.to_numpy().astype(np.float64) for c, p, v, _ in places if v is not None}
    unit = {key: v / np.linalg.norm(v) for key, v in stored.items()}
    mean = np.mean(list(unit.values()), axis=0)
    centred = {key: v - mean for key, v in unit.items()}
    users_of = {(c, p): u for c, p, _, u in places}
    profile = sum(w * centred[(c, p)] / np.linalg.norm(centred[(c, p)]) for c, p, w in recent if w > 0)
    acted = {(c, p) for u, c, p in pairs if u == user}
    visited: dict[str, list] = {}
    for u, c, p in pairs:
        if u != user:
            visited.setdefault(u, []).append((c, p))
    knn: dict[tuple[str, str], float] = {}
    for c, p, _ in recent:  # item-kNN over the other users who share each recent place, within the window
        for theirs in (v for v in visited.values() if (c, p) in v):
            at = theirs.index((c, p))
            for place in set(theirs[max(0, at - WINDOW) : at + WINDOW + 1]) - acted - {(c, p)}:
                knn[place] = knn.get(place, 0.0) + 1 / np.sqrt(users_of[(c, p)] * users_of[place])
    best = max(knn.values())
    reach = np.log(2 + max(users_of.values()))

    def taste(key: tuple[str, str]) -> float:
        v = centred.get(key)
        return 0.0 if v is None else float(v @ profile / np.linalg.norm(v) / np.linalg.norm(profile))

    scores = {
        key: knn.get(key, 0.0) / best + 0.25 * taste(key) + 0.02 * np.log1p(users_of[key]) / reach
        for key in users_of
        if key not in acted
    }
    wanted = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:20]
    assert len(knn) > 20 and len(rows) == 20  # the neighbour term reaches more than the top 20
    assert not {(c, p) for c, p, _ in rows} & acted
    assert [s for *_, s in rows] == sorted((s for *_, s in rows), reverse=True)
    np.testing.assert_allclose([s for *_, s in rows], [s for _, s in wanted], atol=1e-5)
    assert [(c, p) for c, p, _ in rows][:5] == [k for k, _ in wanted][:5]
    newcomer = query(database_url, "SELECT place_category, place_id FROM recommend_places('never-seen', 3)")
    popular = query(
        database_url,
        "SELECT place_category, place_id FROM place_vectors"
        " ORDER BY unique_users DESC, place_category, place_id LIMIT 3",
    )
    assert newcomer == popular  # no history: the most popular places


def test_recommend_places_ranks_catalogue_places_no_one_acted_on_by_their_content(
    s3_env, model_dir, database_url, sample
):
    """Places only the catalogue knows (synced, zero statistics) are ranked by the cosine of their
    centred content vector to the user's profile of centred content vectors; the j-th best with a
    positive cosine scores p_new / 2^(j-1), and that is all they score."""
    install_catalogue(database_url, catalogue(PLACES + 30))  # 30 places no action names
    env = _env(s3_env, model_dir, database_url)
    sync(_batch(env))
    pipeline(_batch(env), sample, shards=2)
    [(user,)] = query(database_url, "SELECT user_id FROM user_behavior_vectors ORDER BY total_actions DESC LIMIT 1")
    with psycopg.connect(database_url) as conn:
        register_vector(conn)
        content = {
            (c, p): (v.to_numpy().astype(np.float64), users)
            for c, p, v, users in conn.execute(
                "SELECT place_category, place_id, content_vector, unique_users FROM place_vectors"
            )
        }
        recent = conn.execute(
            "SELECT place_category, place_id, clicks * 2 + likes * 4 + bookmarks * 7 FROM user_place_interactions"
            " WHERE user_id = %s ORDER BY last_action_at DESC NULLS LAST, place_category DESC, place_id DESC",
            (user,),
        ).fetchall()[:5]
        scored = {
            p_new: {(c, p): score for c, p, score in conn.execute(
                "SELECT * FROM recommend_places(%s, 1000, p_new => %s)", (user, p_new)
            )}
            for p_new in (0.0, 0.5)
        }  # fmt: skip
    mean = np.mean([v for v, _ in content.values()], axis=0)
    centred = {key: (v - mean) / np.linalg.norm(v - mean) for key, (v, _) in content.items()}
    profile = sum(w * centred[(c, p)] for c, p, w in recent if w > 0)
    new = {key for key, (_, users) in content.items() if users == 0}
    assert len(new) == 30
    cosine = {key: float(centred[key] @ profile / np.linalg.norm(profile)) for key in new}
    ranked = sorted((key for key in new if cosine[key] > 0), key=lambda key: -cosine[key])
    assert 0 < len(ranked) < len(new)  # some texts are like the user's places, some are not
    assert new & set(scored[0.5]) == set(ranked)  # a new place is a candidate only by its content
    assert {key: scored[0.5][key] for key in ranked} == pytest.approx({key: 0.5 / 2**j for j, key in enumerate(ranked)})
    assert not new & set(scored[0.0])  # no term: no neighbours, behaviour or popularity bring them
    known = set(scored[0.0]) - new
    assert all(scored[0.5][key] == scored[0.0][key] for key in known)  # the places users met keep their score

    with psycopg.connect(database_url, autocommit=True) as conn:
        # adopted data: the user acted on a place whose unique_users is still 0; it takes no rank
        conn.execute(
            "INSERT INTO user_place_interactions (user_id, place_category, place_id, clicks, position)"
            " VALUES (%s, %s, %s, 1, 1000000)",
            (user, *ranked[0]),
        )
        adopted = dict(((c, p), s) for c, p, s in conn.execute("SELECT * FROM recommend_places(%s, 1000)", (user,)))
        assert ranked[0] not in adopted and adopted[ranked[1]] == pytest.approx(1.2)
        # more places no one acted on than a double can halve for (40 catalogue copies of every place, the
        # content mean unchanged): the best 64 score, and every call answers
        conn.execute(
            "INSERT INTO place_vectors (place_id, place_category, content_vector, combined_vector, content_model,"
            " place_text_version, content_text_sha256, catalogue_sha256)"
            " SELECT place_id || '-copy-' || n, place_category, content_vector, combined_vector, content_model,"
            " place_text_version, content_text_sha256, coalesce(catalogue_sha256, content_text_sha256)"
            " FROM place_vectors, generate_series(1, 40) n WHERE content_vector IS NOT NULL"
        )
        conn.execute(  # as the run that brought them would (reduce_job/serving_tables.py)
            "INSERT INTO fresh_places SELECT id, place_category, place_id, content_vector FROM place_vectors"
            " WHERE place_id LIKE '%-copy-%'"
        )
        many = conn.execute(
            "SELECT count(*) FILTER (WHERE r.score > 0), max(r.score) FROM recommend_places(%s, 100000) r"
            " JOIN place_vectors p USING (place_category, place_id) WHERE p.unique_users = 0",
            (user,),
        ).fetchone()
    assert many == (64, pytest.approx(1.2))


def _text_hashes(env: dict[str, str]) -> np.ndarray:
    return load_partial(env, 0).place_text_sha256


def test_the_catalogue_from_a_table_an_export_or_nowhere(s3_env, model_dir, database_url, sample):
    files = SampleSet(sample.files[:20], sample.expected)
    bare = fresh_env(s3_env, model_dir, DATABASE_URL=database_url)
    seed(bare, files)
    plan_run(bare, shards=1)
    result = run_module("shard_job", bare)
    assert result.returncode == 0, result.stderr[-2000:]
    assert sum("no catalogue to read" in line for line in result.stderr.splitlines()) == 1
    partial = load_partial(bare, 0)
    assert not partial.place_catalogue_sha256.any()  # zeros: no catalogue row
    assert [bytes(h) for h in partial.place_text_sha256] == [
        text_sha256(place_text(c, None)) for c in partial.place_categories
    ]  # category words only: no digits of the ids

    install_catalogue(database_url, catalogue(PLACES))
    run_child(bare, 0)
    from_table = _text_hashes(bare)
    by_key = {(r.table_name, str(r.place_id)): r for r in catalogue(PLACES)}
    read = load_partial(bare, 0)
    assert [bytes(d) for d in read.place_catalogue_sha256] == [
        CatalogueEntry(*(getattr(by_key[(c, p)], f) for f in FIELDS)).sha256()
        for c, p in zip(read.place_categories, read.place_ids, strict=True)
    ]  # the fingerprint of the row each text was made from

    client = s3_client(bare["AWS_REGION"])
    rows = [
        {
            "place_id": r.place_id,
            "table_name": r.table_name,
            "name": r.name,
            "overview": r.overview,
            "region": r.region,
            "city": r.city,
            "category": r.category,
        }
        for r in catalogue(PLACES)
    ]
    client.put_object(
        Bucket=bare["WORK_BUCKET"],
        Key="catalogue.jsonl.gz",
        Body=gzip.compress(b"\n".join(orjson.dumps(r) for r in rows)),
    )
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    client.put_object(Bucket=bare["WORK_BUCKET"], Key="catalogue.csv", Body=text.getvalue().encode())
    for key in ("catalogue.jsonl.gz", "catalogue.csv"):
        run_child({**bare, "CATALOGUE_SOURCE": f"s3://{bare['WORK_BUCKET']}/{key}"}, 0)
        np.testing.assert_array_equal(_text_hashes(bare), from_table)
    query_source = (
        "query:SELECT place_id, table_name, name, overview, region, city, category FROM place_recommendations"
    )
    run_child({**bare, "CATALOGUE_SOURCE": query_source}, 0)
    np.testing.assert_array_equal(_text_hashes(bare), from_table)
