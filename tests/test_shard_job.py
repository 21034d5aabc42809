from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import orjson
import pytest

from local_stack.sample_data import Expected, SampleFile, SampleSet, catalogue, generate, install_catalogue
from tests.helpers import (
    REPO,
    fresh_env,
    load_partial,
    partial_files,
    plan_run,
    query,
    reduce_in_process,
    run_child,
    run_module,
    seed,
    work_objects,
)
from witple_batch.model_files import MODEL_FILE, ModelError, read_manifest
from witple_batch.model_source import ModelSource
from witple_batch.partials import FILES_FILE, METRICS_FILE, REJECTS_FILE, SUCCESS_FILE
from witple_batch.place_text import PLACE_TEXT_VERSION
from witple_batch.s3 import s3_client


@pytest.fixture(scope="module")
def sample() -> SampleSet:
    return generate(actions=3_000, users=300, places=120, seed=3, batch_size=60)


def test_plan_writes_a_balanced_manifest_and_prints_one_json_line(s3_env, model_dir, database_url, sample):
    env = fresh_env(s3_env, model_dir)
    seed(env, sample)
    client = s3_client(env["AWS_REGION"])
    client.put_object(Bucket=env["S3_BUCKET"], Key="user-actions/notes.txt", Body=b"ignore me")
    refused = run_module("coordinator", env, "plan", "--shards", "3")  # no DATABASE_URL: nothing could be claimed
    assert refused.returncode == 2
    assert "DATABASE_URL is required" in refused.stderr
    env["DATABASE_URL"] = database_url
    result = run_module("coordinator", env, "plan", "--shards", "3")
    assert result.returncode == 0, result.stderr
    line = json.loads(result.stdout)
    assert line["shards"] == 3
    assert line["files"] == len(sample.files)
    assert line["bytes"] == sum(len(f.body) for f in sample.files)
    objects = work_objects(env)
    run = f"batch-work/runs/{env['BATCH_ID']}/"
    manifest = json.loads(objects[run + "manifest.json"])
    plans = [json.loads(objects[run + f"plan/{i:05d}.json"]) for i in range(3)]
    loads = [sum(f["size"] for f in plan["files"]) for plan in plans]
    assert loads == [shard["bytes"] for shard in manifest["shards"]]
    assert max(loads) - min(loads) <= max(len(f.body) for f in sample.files)
    assert sorted(f["key"] for plan in plans for f in plan["files"]) == sorted(f.key for f in sample.files)
    # a second plan under the same BATCH_ID must not rewrite a plan children may be reading
    again = run_module("coordinator", env, "plan", "--shards", "3")
    assert again.returncode == 2
    assert f"BATCH_ID {env['BATCH_ID']} is already planned" in again.stderr
    assert work_objects(env)[run + "manifest.json"] == objects[run + "manifest.json"]


def test_plan_with_no_files_prints_zero_shards(s3_env, model_dir, database_url):
    env = fresh_env(s3_env, model_dir, DATABASE_URL=database_url)
    result = run_module("coordinator", env, "plan")
    assert result.returncode == 0, result.stderr
    line = json.loads(result.stdout)
    seconds = line.pop("seconds")
    assert set(seconds) == {"start", "plan"} and seconds["start"] > 0  # imports and settings, named
    assert line == {
        "batch_id": env["BATCH_ID"],
        "shards": 0,
        "actions_named": 0,
        "files": 0,
        "bytes": 0,
        "manifest_uri": None,
        "listing": "full",
        "places": 0,
        "space": {"model": read_manifest(model_dir).onnx_sha256, "text_version": PLACE_TEXT_VERSION},
        "more": False,
    }


def test_shards_account_for_every_record_and_match_the_generator(s3_env, model_dir, sample, database_url):
    env = fresh_env(s3_env, model_dir, DATABASE_URL=database_url)
    seed(env, sample)
    plan_run(env, shards=2)
    metrics = [run_child(env, i) for i in range(2)]
    read = sum(m["records_read"] for m in metrics)
    accepted = sum(m["records_accepted"] for m in metrics)
    rejected = sum(m["records_rejected"] for m in metrics)
    assert read == accepted + rejected
    assert accepted == sample.expected.actions
    assert rejected == sample.expected.rejected_records
    assert sum(m["files_rejected"] for m in metrics) == sample.expected.rejected_files

    users: dict[str, np.ndarray] = {}
    for index in range(2):
        files = partial_files(env, index)
        partial = load_partial(env, index)
        for row in partial.files:
            assert row["records"] == row["accepted"] + row["rejected"]
        for user, counts in zip(partial.pair_user.tolist(), partial.pair_counts, strict=True):
            uid = partial.user_ids[user]
            users[uid] = users.get(uid, 0) + counts
        norms = np.linalg.norm(partial.place_content, axis=1)
        np.testing.assert_allclose(norms, 1.0, atol=1e-5)
        rejects = [orjson.loads(line) for line in gzip.decompress(files[REJECTS_FILE]).splitlines()]
        assert {r["key"] for r in rejects} <= {f.key for f in sample.files}
    for uid, expected in sample.expected.users.items():
        assert list(users[uid]) == [expected["click"], expected["like"], expected["bookmark"], expected["other"]]


def test_the_child_names_its_start_up_and_loads_the_model_off_that_path(s3_env, model_dir, sample, database_url):
    env = fresh_env(s3_env, model_dir, DATABASE_URL=database_url)
    seed(env, sample)
    plan_run(env, shards=1)
    child = run_module("shard_job", env)
    assert child.returncode == 0, child.stderr
    [finished] = [json.loads(line) for line in child.stderr.splitlines() if '"shard finished"' in line]
    seconds = finished["seconds"]
    assert set(seconds) == {
        *("start", "connect", "read", "model_load", "model_wait", "aggregate"),
        *("catalogue_and_stored", "embed", "write", "total"),
    }
    assert 0 < seconds["start"] < 30  # the process's age when its work began
    assert seconds["model_load"] > 0 and seconds["model_wait"] <= seconds["model_load"]
    # onnxruntime and tokenizers load on the model's thread, not before the first GET
    probe = "import sys, shard_job.child; print(sorted({'onnxruntime', 'tokenizers'} & set(sys.modules)))"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, check=True)
    assert loaded.stdout.strip() == "[]"


def test_a_changed_model_file_fails_the_child_before_it_reads_a_file(s3_env, model_dir, sample, tmp_path, database_url):
    broken = tmp_path / "model"
    shutil.copytree(model_dir, broken)
    data = bytearray((broken / MODEL_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (broken / MODEL_FILE).write_bytes(bytes(data))
    env = fresh_env(s3_env, model_dir, DATABASE_URL=database_url)
    seed(env, sample)
    plan_run(env, shards=1)
    client = s3_client(env["AWS_REGION"])
    for item in sample.files:  # a child that reads would log each as gone, left to the next plan
        client.delete_object(Bucket=env["S3_BUCKET"], Key=item.key)
    child = run_module("shard_job", {**env, "MODEL_DIR": str(broken)})
    assert child.returncode == 2, child.stderr  # permanent: Batch does not retry a broken image
    assert "model.onnx is corrupt" in child.stderr
    assert "left to the next plan" not in child.stderr


def test_pairs_count_each_type_and_keep_first_and_last_time(s3_env, model_dir, database_url):
    env = fresh_env(s3_env, model_dir, DATABASE_URL=database_url)
    actions = [
        {"user_id": "u", "place_id": "1", "place_category": "nature", "action_type": "click"},
        {
            "user_id": "u",
            "place_id": "2",
            "place_category": "shopping",
            "action_type": "bookmark",
            "timestamp": "2025-01-01T00:00:05Z",
        },
        {
            "user_id": "u",
            "place_id": "2",
            "place_category": "shopping",
            "action_type": "share",
            "timestamp": "2025-01-01T00:00:01Z",
        },
        {"user_id": "v" * 256, "place_id": "2", "place_category": "shopping", "action_type": "LIKE"},
    ]
    key = "user-actions/year=2025/month=01/day=01/hour=00/batch-1-3-aaaaaaaa.json"
    seed(env, SampleSet([SampleFile(key, orjson.dumps({"actions": actions}))], Expected()))
    plan_run(env, shards=1)
    run_child(env, 0)
    partial = load_partial(env, 0)
    assert partial.user_ids == ["u", "v" * 256]
    assert list(zip(partial.place_categories, partial.place_ids, strict=True)) == [("nature", "1"), ("shopping", "2")]
    assert partial.pair_user.tolist() == [0, 0, 1] and partial.pair_place.tolist() == [0, 1, 1]
    assert partial.pair_counts.tolist() == [[1, 0, 0, 0], [0, 0, 1, 1], [0, 1, 0, 0]]
    assert partial.pair_first_us[1] == 1735689601000000 and partial.pair_last_us[1] == 1735689605000000
    # ids are stored back to back: the 256-character id costs its own bytes, not every id's width
    files = partial_files(env, 0)
    assert np.load(__import__("io").BytesIO(files["users.id_utf8.npy"])).nbytes == 1 + 256


def test_rerun_rewrites_identical_bytes(s3_env, model_dir, sample, database_url):
    env = fresh_env(s3_env, model_dir, DATABASE_URL=database_url)
    seed(env, sample)
    plan_run(env, shards=2)
    run_child(env, 1)
    first = partial_files(env, 1)
    run_child(env, 1)
    second = partial_files(env, 1)
    assert set(first) == set(second)
    for name in first:
        if name not in (METRICS_FILE, SUCCESS_FILE):  # timings differ by nature
            assert first[name] == second[name], name
    assert json.loads(first[SUCCESS_FILE])["files"][FILES_FILE] == json.loads(second[SUCCESS_FILE])["files"][FILES_FILE]


def test_child_without_array_index_is_shard_zero(s3_env, model_dir, sample, database_url):
    env = fresh_env(s3_env, model_dir, DATABASE_URL=database_url)
    seed(env, SampleSet(sample.files[:5], sample.expected))
    plan_run(env, shards=1)
    result = run_module("shard_job", env)
    assert result.returncode == 0, result.stderr
    assert SUCCESS_FILE in partial_files(env, 0)
    finished = [json.loads(line) for line in result.stderr.splitlines() if '"shard finished"' in line]
    assert finished[0]["shard"] == 0
    assert finished[0]["records_read"] == finished[0]["records_accepted"] + finished[0]["records_rejected"]


def test_missing_batch_id_is_a_configuration_error(s3_env, model_dir):
    env = fresh_env(s3_env, model_dir)
    env.pop("BATCH_ID")
    result = run_module("shard_job", {**env, "BATCH_ID": ""})
    assert result.returncode == 2
    assert "BATCH_ID is required" in result.stderr


def test_an_object_deleted_or_overwritten_after_planning_is_left_to_the_next_plan(
    s3_env, model_dir, database_url, sample
):
    env = fresh_env(s3_env, model_dir, DATABASE_URL=database_url, CATALOGUE_SOURCE="none")
    files = sorted(sample.files[:4], key=lambda f: f.key)
    seed(env, SampleSet(files, sample.expected))
    plan_run(env, shards=1)
    client = s3_client(env["AWS_REGION"])
    client.delete_object(Bucket=env["S3_BUCKET"], Key=files[1].key)
    client.put_object(Bucket=env["S3_BUCKET"], Key=files[2].key, Body=files[0].body)  # IfMatch now fails
    result = run_module("shard_job", env)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = {row["key"]: row for row in json.loads(partial_files(env, 0)[FILES_FILE])}
    assert rows[files[1].key]["status"] == "deferred" and "deleted after planning" in rows[files[1].key]["reason"]
    assert rows[files[2].key]["status"] == "deferred" and "overwritten after planning" in rows[files[2].key]["reason"]
    assert files[2].key in result.stderr  # the child names the key
    reduce_in_process(env)
    ledger = {key for (key,) in query(database_url, "SELECT key FROM processed_files")}
    assert ledger == {files[0].key, files[3].key}  # deferred files stay out of the ledger
    later = {**env, "BATCH_ID": env["BATCH_ID"] + "-next"}
    assert plan_run(later, shards=1)["files"] == 1  # the overwritten object, in its new version


def test_partials_never_hold_pickles(s3_env, model_dir, sample, database_url):
    env = fresh_env(s3_env, model_dir, DATABASE_URL=database_url)
    seed(env, SampleSet(sample.files[:4], sample.expected))
    plan_run(env, shards=1)
    run_child(env, 0)
    for name, data in partial_files(env, 0).items():
        if name.endswith(".npy"):
            array = np.load(__import__("io").BytesIO(data), allow_pickle=False)
            assert array.dtype != object, name
    assert Path(FILES_FILE).suffix == ".json"


def test_plan_leaves_out_files_in_the_ledger(s3_env, model_dir, database_url, sample):
    from witple_batch.schema import migrate

    env = fresh_env(s3_env, model_dir, DATABASE_URL=database_url)
    seed(env, SampleSet(sample.files[:6], sample.expected))
    with __import__("psycopg").connect(database_url, autocommit=True) as conn:
        migrate(conn)
        for item in sample.files[:2]:
            conn.execute(
                "INSERT INTO processed_files (key, etag, size, batch_id, status)"
                " VALUES (%s, 'e', 1, 'old', 'processed')",
                (item.key,),
            )
    result = plan_run(env, shards=1)
    assert result["files"] == 4
    plan = json.loads(work_objects(env)[f"batch-work/runs/{env['BATCH_ID']}/plan/00000.json"])
    assert {f["key"] for f in plan["files"]} == {f.key for f in sample.files[2:6]}
    assert query(database_url, "SELECT count(*) FROM processed_files") == [(2,)]
    assert query(database_url, "SELECT count(*) FROM file_claims WHERE batch_id = %s", (env["BATCH_ID"],)) == [(4,)]


def test_a_wrong_content_encoding_loses_nothing(s3_env, model_dir, database_url):
    action = {"user_id": "u", "place_id": "1", "place_category": "nature", "action_type": "click"}
    prefix = "user-actions/year=2025/month=01/day=01/hour=00/"
    files = [
        SampleFile(prefix + "batch-1-1-aaaaaaa1.json", orjson.dumps({"actions": [action]}), "gzip"),  # says gzip, isn't
        SampleFile(prefix + "batch-2-1-aaaaaaa2.json", gzip.compress(orjson.dumps([action]))),  # is gzip, says nothing
        SampleFile(prefix + "batch-3-1-aaaaaaa3.json.gz", gzip.compress(orjson.dumps(action)), "gzip"),
    ]
    env = fresh_env(s3_env, model_dir, DATABASE_URL=database_url)
    seed(env, SampleSet(files, Expected()))
    plan_run(env, shards=1)
    metrics = run_child(env, 0)
    assert (metrics["records_read"], metrics["records_accepted"], metrics["files_rejected"]) == (3, 3, 0)


def test_model_uri_is_fetched_from_s3(s3_env, model_dir, database_url, sample, tmp_path):
    from witple_batch.model_files import MODEL_FILES

    env = fresh_env(s3_env, model_dir, MODEL_DIR=str(tmp_path / "not-there"))
    client = s3_client(env["AWS_REGION"])
    for name in MODEL_FILES:
        client.upload_file(str(model_dir / name), env["WORK_BUCKET"], f"models/minilm/{name}")
    seed(env, SampleSet(sample.files[:3], sample.expected))
    plan_run({**env, "DATABASE_URL": database_url}, shards=1)  # the children run without it
    with_uri = {**env, "MODEL_URI": f"s3://{env['WORK_BUCKET']}/models/minilm/"}
    result = run_module("shard_job", with_uri)
    assert result.returncode == 0, result.stderr[-2000:]
    without = run_module("shard_job", env)
    assert without.returncode == 2  # a broken model is not worth Batch's retries
    assert "not-there does not exist" in without.stderr
    checked = run_module("shard_job", with_uri, "check")  # the files the child uses, not MODEL_DIR's
    assert checked.returncode == 0 and f"model: {with_uri['MODEL_URI']}: files match" in checked.stdout, checked.stdout
    elsewhere = run_module("shard_job", {**with_uri, "MODEL_URI": with_uri["MODEL_URI"] + "x/"}, "check")
    assert elsewhere.returncode == 2 and "FAIL model:" in elsewhere.stdout, elsewhere.stdout
    assert run_module("shard_job", with_uri, "check", "--local").returncode == 0
    # the planner reads only the manifest: the space the children will embed in
    assert ModelSource.from_env(with_uri).onnx_sha256(client) == read_manifest(model_dir).onnx_sha256
    with pytest.raises(ModelError, match=r"models/none/model_manifest\.json is missing"):
        ModelSource.from_env({**env, "MODEL_URI": f"s3://{env['WORK_BUCKET']}/models/none"}).onnx_sha256(client)


def _data_files(files: dict[str, bytes]) -> dict[str, bytes]:
    return {name: data for name, data in files.items() if name not in (METRICS_FILE, SUCCESS_FILE)}


def test_stored_content_vectors_are_reused_byte_for_byte(s3_env, model_dir, database_url, sample):
    install_catalogue(database_url, catalogue(120))
    env = fresh_env(s3_env, model_dir, DATABASE_URL=database_url)
    seed(env, SampleSet(sample.files[:30], sample.expected))
    plan_run(env, shards=1)
    first = run_child(env, 0)
    distinct_texts = len({bytes(h) for h in load_partial(env, 0).place_text_sha256})
    assert (first["places_reused"], first["texts_embedded"]) == (0, distinct_texts)  # empty database
    reduce_in_process(env)

    later = {**env, "BATCH_ID": env["BATCH_ID"] + "-2"}
    seed(later, SampleSet(sample.files[30:], sample.expected))
    assert plan_run(later, shards=1)["files"] == len(sample.files) - 30
    export = "\n".join(
        orjson.dumps({**row.__dict__, "table_name": row.table_name}).decode() for row in catalogue(120)
    ).encode()
    s3_client(env["AWS_REGION"]).put_object(Bucket=env["WORK_BUCKET"], Key="catalogue.jsonl", Body=export)
    without_db = {k: v for k, v in later.items() if k != "DATABASE_URL"}
    without_db["CATALOGUE_SOURCE"] = f"s3://{env['WORK_BUCKET']}/catalogue.jsonl"  # the same texts, no database
    cold = run_child(without_db, 0)
    cold_files = partial_files(later, 0)
    warm = run_child(later, 0)
    warm_files = partial_files(later, 0)

    seen = set(query(database_url, "SELECT place_category, place_id FROM place_vectors"))
    partial = load_partial(later, 0)
    keys = list(zip(partial.place_categories, partial.place_ids, strict=True))
    assert cold["places_reused"] == 0
    assert warm["places_reused"] == sum(key in seen for key in keys) > 0
    assert warm["texts_embedded"] <= len(keys) - warm["places_reused"]  # places sharing a text embed it once
    assert _data_files(warm_files) == _data_files(cold_files)  # stored vectors are what embedding gives


def test_vectors_of_another_model_are_neither_reused_nor_kept(s3_env, model_dir, database_url, sample):
    env = fresh_env(s3_env, model_dir, DATABASE_URL=database_url)
    seed(env, SampleSet(sample.files[:20], sample.expected))
    plan_run(env, shards=1)
    run_child(env, 0)
    reduce_in_process(env)
    with __import__("psycopg").connect(database_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE place_vectors SET content_model = 'an-older-export',"
            " content_vector = array_fill(0.05::real, '{384}')::vector"
        )

    later = {**env, "BATCH_ID": env["BATCH_ID"] + "-2"}
    seed(later, SampleSet(sample.files[20:40], sample.expected))
    plan_run(later, shards=1)
    assert run_child(later, 0)["places_reused"] == 0
    reduce_in_process(later)
    partial = load_partial(later, 0)
    model = json.loads(partial_files(later, 0)[SUCCESS_FILE])["content_model"]
    touched = set(zip(partial.place_categories, partial.place_ids, strict=True))
    rows = query(
        database_url, "SELECT place_category, place_id, content_model, content_vector::text FROM place_vectors"
    )
    for category, place_id, content_model, vector in rows:
        if (category, place_id) in touched:  # replaced by this model's vector
            assert content_model == model
            assert not vector.startswith("[0.05,0.05")
        else:  # untouched rows keep what they had until a batch touches them
            assert content_model == "an-older-export"


def test_an_unreachable_database_only_costs_the_reuse(s3_env, model_dir, database_url, sample, caplog, dead_port):
    env = fresh_env(s3_env, model_dir, CATALOGUE_SOURCE="none", DB_CONNECT_ATTEMPTS="1")
    seed(env, SampleSet(sample.files[:3], sample.expected))
    plan_run({**env, "DATABASE_URL": database_url}, shards=1)
    url = f"postgresql://batch:hunter2@127.0.0.1:{dead_port}/witple"
    metrics = run_child({**env, "DATABASE_URL": url}, 0)
    categories = set(load_partial(env, 0).place_categories)
    assert metrics["places_reused"] == 0 and metrics["texts_embedded"] == len(categories) > 0  # category words
    warnings = [r for r in caplog.records if r.getMessage().startswith("stored content vectors unavailable")]
    assert len(warnings) == 1
    assert "127.0.0.1" in warnings[0].fields["error"] and "hunter2" not in warnings[0].fields["error"]


def test_an_unreachable_catalogue_database_fails_the_child_for_a_retry(
    s3_env, model_dir, database_url, sample, dead_port
):
    """Without the catalogue every place would get its fallback text: better a retry than churned vectors."""
    env = fresh_env(s3_env, model_dir, DB_CONNECT_ATTEMPTS="1")
    seed(env, SampleSet(sample.files[:3], sample.expected))
    plan_run({**env, "DATABASE_URL": database_url}, shards=1)
    url = f"postgresql://batch:hunter2@127.0.0.1:{dead_port}/witple"
    result = run_module("shard_job", {**env, "DATABASE_URL": url, "AWS_BATCH_JOB_ATTEMPT": "1"})
    assert result.returncode == 1
    assert "cannot connect to postgresql://batch:***@127.0.0.1" in result.stderr
    assert "hunter2" not in result.stderr
    assert SUCCESS_FILE not in partial_files(env, 0)
