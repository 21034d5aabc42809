"""Least privilege and secrets: the shards' database role cannot write, and no secret reaches any
output (logs, report.json, metrics.json, the rejects file, plans, webhook bodies)."""

from __future__ import annotations

import gzip
import uuid
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from local_stack.sample_data import generate
from tests.helpers import REPO, fresh_env, query, run_module, seed, work_objects

ROLES_SQL = (REPO / "deploy" / "sql" / "roles.sql").read_text()


def _with_login(url: str, user: str, password: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{host}"))


def _login(admin_url: str, name: str, password: str, *grants: str) -> str:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {name} LOGIN PASSWORD '{password}' {' '.join(grants)}")  # type: ignore[arg-type]
    return _with_login(admin_url, name, password)


@pytest.fixture
def migrated(s3_env, model_dir, database_url):
    env = fresh_env(s3_env, model_dir, DATABASE_URL=database_url)
    result = run_module("reduce_job", env, "migrate")
    assert result.returncode == 0, result.stderr
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(ROLES_SQL)  # type: ignore[arg-type]
    return env


def test_the_shards_role_reads_and_records_but_cannot_write(migrated, database_url):
    tag = uuid.uuid4().hex[:8]
    shard_url = _login(database_url, f"shard_{tag}", f"pw{tag}", "IN ROLE witple_shard_reader")
    sample = generate(actions=400, users=30, places=15, batch_size=40, malformed_files=0)
    seed(migrated, sample)
    assert run_module("coordinator", migrated, "plan", "--shards", "1").returncode == 0  # the planner: the writer
    child = run_module("shard_job", {**migrated, "DATABASE_URL": shard_url})
    assert child.returncode == 0, child.stderr  # catalogue and stored vectors read with the reader role
    reduce = run_module("reduce_job", migrated)
    assert reduce.returncode == 0, reduce.stderr
    with psycopg.connect(shard_url, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM place_vectors").fetchone()[0] == len(sample.expected.places)  # type: ignore[index]
        for write in (
            "INSERT INTO user_behavior_vectors (user_id) VALUES ('intruder')",
            "UPDATE place_vectors SET total_clicks = total_clicks + 1000",
            "DELETE FROM processed_files",
            "UPDATE batch_runs SET status = 'failed'",
            "INSERT INTO file_claims (key, batch_id) VALUES ('k', 'b')",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"):
                conn.execute(write)  # type: ignore[arg-type]
        # its three moves go through the functions, and only the moves they allow
        assert conn.execute("SELECT witple_fail_run(%s, 'x')", (migrated["BATCH_ID"],)).fetchone()[0] is False  # type: ignore[index]
    assert query(database_url, "SELECT status FROM batch_runs WHERE batch_id = %s", (migrated["BATCH_ID"],)) == [
        ("notified",)
    ]
    outsider_url = _login(database_url, f"outsider_{tag}", f"pw{tag}")
    with psycopg.connect(outsider_url, autocommit=True) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SELECT witple_fail_run('any', 'x')")


def test_no_secret_reaches_any_output(migrated, database_url, receiver):
    tag = uuid.uuid4().hex[:8]
    db_password = f"db-password-{tag}"
    writer_url = _login(database_url, f"writer_{tag}", db_password, "SUPERUSER")
    secrets = {
        "WEBHOOK_SECRET": f"webhook-secret-{tag}",
        "PARTIALS_SECRET": f"partials-secret-{tag}-long-enough-for-a-key",
    }
    hook_path, hook_code = f"hooks/T0/B0/path-credential-{tag}", f"query-credential-{tag}"
    webhook_url = f"{receiver.url.rstrip('/')}/{hook_path}?code={hook_code}"  # credentials as Slack and Azure put them
    env = {**migrated, **secrets, "DATABASE_URL": writer_url, "WEBHOOK_URL": webhook_url, "LOG_LEVEL": "DEBUG"}
    sample = generate(actions=500, users=30, places=15, batch_size=50, malformed_files=2)
    seed(env, sample)
    outputs = [
        run_module("coordinator", env, "plan", "--shards", "2"),
        run_module("shard_job", {**env, "AWS_BATCH_JOB_ARRAY_INDEX": "0"}),
        run_module("shard_job", {**env, "AWS_BATCH_JOB_ARRAY_INDEX": "1"}),
        run_module("reduce_job", env),
        run_module("reduce_job", env, "status"),
        run_module("shard_job", env, "check"),
        run_module("reduce_job", env, "check"),
        run_module("reduce_job", {**env, "BATCH_ID": "another-run"}),  # a failure, with its error line
    ]
    assert [r.returncode for r in outputs[:7]] == [0] * 7, [r.stderr[-500:] for r in outputs]
    assert outputs[7].returncode == 2
    texts = {f"output {i}": r.stdout + r.stderr for i, r in enumerate(outputs)}
    for key, data in work_objects(env).items():  # plans, manifest, partials, rejects, metrics, report
        texts[key] = (gzip.decompress(data) if key.endswith(".gz") else data).decode("utf-8", "replace")
    assert any(k.endswith("report.json") for k in texts) and any(k.endswith("rejects.jsonl.gz") for k in texts)
    assert receiver.received, "the webhook was sent"
    for index, received in enumerate(receiver.received):
        texts[f"webhook {index}"] = received.body.decode() + repr(received.headers)
    assert any("postgresql://" in t for t in texts.values())  # URLs are logged, masked
    webhook_credentials = [("webhook path", f"path-credential-{tag}"), ("webhook query", hook_code)]
    for name, secret in [*secrets.items(), ("database password", db_password), *webhook_credentials]:
        leaked = [where for where, text in texts.items() if secret in text]
        assert leaked == [], f"{name} appears in {leaked}"
