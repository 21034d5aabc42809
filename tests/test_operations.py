"""What operators run: `check` (one line per check, exit 0 or 2), `status` (runs from batch_runs),
and the CloudWatch metric lines every job prints."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

import boto3
import pytest

from local_stack.sample_data import generate
from tests.helpers import REPO, fresh_env, pipeline, seed
from witple_batch.model_files import MODEL_FILE


def _run(module: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )


def _lines(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """check's stdout as {name: 'ok ...' | 'FAIL ...'}."""
    out = {}
    for line in result.stdout.strip().splitlines():
        state, rest = line.split(" ", 1)
        name, detail = rest.strip().split(": ", 1)
        out[name] = f"{state} {detail}"
    return out


@pytest.fixture
def stack_env(s3_env, model_dir, database_url):
    env = fresh_env(s3_env, model_dir, DATABASE_URL=database_url)
    migrated = _run("reduce_job", env, "migrate")
    assert migrated.returncode == 0, migrated.stderr
    return env


def test_check_passes_on_the_local_stack(stack_env):
    for module in ("shard_job", "reduce_job"):
        result = _run(module, stack_env, "check")
        assert result.returncode == 0, result.stdout + result.stderr
        lines = _lines(result)
        assert all(v.startswith("ok") for v in lines.values()), lines
        assert {"settings", "s3 work", "database"} <= set(lines)
    everything = {"settings", "model", "s3 input", "s3 work", "database"}
    assert set(_lines(_run("shard_job", stack_env, "check"))) == everything
    local = _run("shard_job", {**stack_env, "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}, "check", "--local")
    assert local.returncode == 0 and set(_lines(local)) == {"settings", "model"}  # no network in the HEALTHCHECK


def test_check_names_a_missing_or_bad_setting_in_one_line(stack_env):
    missing = _run("reduce_job", {**stack_env, "DATABASE_URL": ""}, "check")
    assert missing.returncode == 2
    assert _lines(missing) == {"settings": "FAIL DATABASE_URL is required but not set"}
    bad = _run("shard_job", {**stack_env, "MAX_OBJECT_MB": "lots"}, "check")
    assert bad.returncode == 2
    [line] = bad.stdout.strip().splitlines()
    assert line.startswith("FAIL settings: MAX_OBJECT_MB")
    endless = _run("reduce_job", {**stack_env, "DB_STATEMENT_TIMEOUT_SECONDS": "inf"}, "check")
    assert endless.returncode == 2
    assert _lines(endless)["settings"] == "FAIL DB_STATEMENT_TIMEOUT_SECONDS must be a finite number, got 'inf'"
    bad_port = _run("reduce_job", {**stack_env, "WEBHOOK_URL": "https://main.example:99999/hook"}, "check")
    assert _lines(bad_port)["settings"] == "FAIL WEBHOOK_URL has a bad port"
    no_database = {**stack_env, "DATABASE_URL": "", "CATALOGUE_SOURCE": "table:places"}
    assert _lines(_run("shard_job", no_database, "check"))["settings"] == (
        "FAIL CATALOGUE_SOURCE table:... needs DATABASE_URL, which is not set"
    )
    empty = _run("coordinator", stack_env, "plan", "--dry-run", "--target-mb-per-shard", "0")
    assert empty.returncode == 2 and "--target-mb-per-shard must be above 0" in empty.stderr, empty.stderr[-500:]


def test_check_finds_a_model_file_that_does_not_match_its_manifest(stack_env, model_dir, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(model_dir, copy)
    with (copy / MODEL_FILE).open("r+b") as f:
        f.seek(4096)
        byte = f.read(1)
        f.seek(4096)
        f.write(bytes([byte[0] ^ 0xFF]))
    result = _run("shard_job", {**stack_env, "MODEL_DIR": str(copy)}, "check")
    assert result.returncode == 2
    assert _lines(result)["model"].startswith(f"FAIL {copy / MODEL_FILE} is corrupt: sha256")
    assert _lines(result)["s3 work"].startswith("ok")  # one bad check does not hide the others


def test_check_reports_s3_and_the_database_unreachable(stack_env, dead_port):
    closed = dead_port  # bound, never listening
    env = {**stack_env, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{closed}"}
    env["DATABASE_URL"] = stack_env["DATABASE_URL"].rsplit("@", 1)[0] + f"@127.0.0.1:{closed}/nothing"
    result = _run("shard_job", env, "check")
    assert result.returncode == 2
    lines = _lines(result)
    assert lines["s3 input"].startswith("FAIL S3 unreachable")
    assert lines["s3 work"].startswith("FAIL S3 unreachable")
    assert lines["database"].startswith("FAIL cannot connect to")
    assert "settings" in lines and lines["settings"].startswith("ok")


def test_check_reports_an_unmigrated_database(s3_env, model_dir, database_url):
    env = fresh_env(s3_env, model_dir, DATABASE_URL=database_url)
    result = _run("reduce_job", env, "check")
    assert result.returncode == 2
    assert _lines(result)["database"].startswith("FAIL not migrated:")
    assert "run python -m reduce_job migrate" in _lines(result)["database"]


@contextmanager
def _iam_enforced(endpoint: str) -> Iterator[None]:
    """moto checks IAM policies on every request while this holds (it does not by default)."""

    def reset(count: bytes) -> None:
        request = urllib.request.Request(
            f"{endpoint}/moto-api/reset-auth", data=count, method="POST", headers={"Content-Type": "text/plain"}
        )
        urllib.request.urlopen(request).read()

    reset(b"0")
    try:
        yield
    finally:
        reset(b"inf")


def test_check_reports_access_denied_on_the_work_prefix(stack_env, moto):
    iam = boto3.session.Session(region_name=stack_env["AWS_REGION"]).client("iam")
    user = f"reader-{stack_env['BATCH_ID']}"
    iam.create_user(UserName=user)
    read_only = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetObject"], "Resource": "*"}],
    }
    iam.put_user_policy(UserName=user, PolicyName="read-only", PolicyDocument=json.dumps(read_only))
    key = iam.create_access_key(UserName=user)["AccessKey"]
    env = {
        **stack_env,
        "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
        "DATABASE_URL": "",  # S3 alone here
    }
    with _iam_enforced(moto.endpoint):
        result = _run("shard_job", {k: v for k, v in env.items() if k != "DATABASE_URL"}, "check")
    assert result.returncode == 2
    lines = _lines(result)
    assert lines["s3 input"].startswith("ok")
    work = f"s3://{stack_env['WORK_BUCKET']}/batch-work/_checks/"
    assert lines["s3 work"].startswith(f"FAIL cannot write and read {work}")
    assert "AccessDenied" in lines["s3 work"]


def test_status_shows_the_runs_the_database_holds(stack_env, receiver):
    env = {**stack_env, "WEBHOOK_URL": receiver.url}
    sample = generate(actions=600, users=40, places=20, batch_size=30, malformed_files=1)
    seed(env, sample)
    pipeline(env, None)
    table = _run("reduce_job", env, "status")
    assert table.returncode == 0, table.stderr
    header, row, *rest = table.stdout.splitlines()
    assert header.split()[:3] == ["batch", "status", "notice"]
    cells = row.split()
    assert cells[:3] == [env["BATCH_ID"], "notified", "SUCCEEDED"]
    assert any(line.strip().startswith("stages: start") for line in rest)
    [run] = json.loads(_run("reduce_job", env, "status", "--json", "--last", "1").stdout)
    assert run["actions"] == sample.expected.actions
    assert run["rejects"] == sample.expected.rejected_records
    assert run["users"] == len(sample.expected.users)
    assert run["places"] == len(sample.expected.places)
    assert run["webhook"] == "delivered"
    assert set(run["seconds"]) == {
        *("start", "connect_and_migrate", "stage", "interactions", "vectors", "write", "serving")
    }
    lists, places = table.stdout.splitlines()[-2:]
    assert lists.startswith("place neighbours: 0 lists waiting, 0 pairs not counted yet; counted from scratch at ")
    assert places.startswith("places consolidated up to ") and places.endswith(
        "(0 users carried); 0 users moved since, their places lag them"
    )  # one run: every user new, so every place holds its users' vectors


def test_every_job_prints_its_figures_as_one_cloudwatch_metric_line(stack_env, receiver):
    env = {**stack_env, "WEBHOOK_URL": receiver.url}
    sample = generate(actions=300, users=30, places=10, batch_size=30, malformed_files=0)
    seed(env, sample)
    plan = _run("coordinator", env, "plan", "--shards", "1")
    assert plan.returncode == 0, plan.stderr
    child = _run("shard_job", env)
    reduce = _run("reduce_job", env)
    assert reduce.returncode == 0, reduce.stderr
    figures = {}
    for job, result in (("shard", child), ("reduce", reduce)):
        emf = [line for line in map(json.loads, result.stderr.splitlines()) if "_aws" in line and line["Job"] == job]
        assert len(emf) == 1, result.stderr
        [directive] = emf[0]["_aws"]["CloudWatchMetrics"]
        assert directive["Namespace"] == "Witple/Batch" and directive["Dimensions"] == [["Job"]]
        names = [m["Name"] for m in directive["Metrics"]]
        assert all(isinstance(emf[0][name], float) for name in names)  # every declared metric has its value
        figures[job] = emf[0]
    assert figures["shard"]["Actions"] == figures["reduce"]["Actions"] == sample.expected.actions
    assert figures["reduce"]["Users"] == len(sample.expected.users)
    assert figures["reduce"]["Seconds"] > 0
    [committed] = [line for line in map(json.loads, reduce.stderr.splitlines()) if line.get("msg") == "batch committed"]
    assert 0 < committed["seconds"]["start"] < 20  # a real reduce process: its own start-up, not the test's
    notices = [line for line in map(json.loads, reduce.stderr.splitlines()) if line.get("Job") == "notice"]
    assert [n["BatchesSucceeded"] for n in notices] == [1.0]
