"""Fixtures that start real services: a moto S3 server over HTTP, embedded PostgreSQL, a webhook receiver."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import psycopg
import pytest

from local_stack.moto_s3 import LOCAL_PARTIALS_SECRET, MotoS3
from local_stack.postgres import LocalPostgres
from local_stack.webhook_receiver import WebhookReceiver
from tests.helpers import fresh_env
from tests.tiny_models import TinyExport, export_tiny_model
from witple_batch.model_files import ModelError, verify_model_dir

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def model_dir() -> Path:
    path = Path(os.environ.get("MODEL_DIR") or REPO / ".cache" / "model")
    try:
        verify_model_dir(path)
    except ModelError as exc:
        pytest.fail(f"exported model needed (scripts/bootstrap.sh makes it): {exc}")
    return path


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory: pytest.TempPathFactory) -> TinyExport:
    """A random XLM-R-shaped MiniLM (no token_type_ids), exported by the CLI: the plumbing without real
    weights. Built once per test run: parallel workers share the one the first of them made."""
    shared = tmp_path_factory.getbasetemp().parent  # the same folder for every xdist worker
    with (shared / "tiny-xlmr.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return export_tiny_model(shared / "tiny-xlmr")


@pytest.fixture(scope="session")
def moto() -> Iterator[MotoS3]:
    with MotoS3.start() as server:
        yield server


@pytest.fixture
def s3_env(moto: MotoS3, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Point boto3 in this process (and children given this env) at the moto server; a webhook that
    fails is retried at once (the retries are what the tests count, not the pauses)."""
    env = {**moto.client_env(), "WEBHOOK_BACKOFF_SECONDS": "0.01"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture(scope="session")
def postgres() -> Iterator[LocalPostgres]:
    with LocalPostgres.running() as server:
        yield server


@pytest.fixture
def database_url(postgres: LocalPostgres) -> Iterator[str]:
    """A fresh database per test on the shared server (CREATE DATABASE is ~0.1 s)."""
    url = postgres.new_database()
    yield url
    with psycopg.connect(postgres.url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver.running() as server:
        yield server


@pytest.fixture
def batch_env(moto, s3_env, model_dir, database_url):
    """A Fargate queue on the moto server (jobs succeed at once, nothing runs: use_docker off), the
    secrets the job definitions name, and the settings deploy.sh and the coordinator need, with the
    real AWS CLI on PATH."""
    request = urllib.request.Request(
        f"{moto.endpoint}/moto-api/config",
        data=json.dumps({"batch": {"use_docker": False}}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    urllib.request.urlopen(request).read()
    tag = uuid.uuid4().hex[:8]
    session = boto3.session.Session(region_name=s3_env["AWS_REGION"])
    iam = session.client("iam")
    role = iam.create_role(RoleName=f"batch-{tag}", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    ec2 = session.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(GroupName=f"sg-{tag}", Description="batch", VpcId=vpc)["GroupId"]
    batch = session.client("batch")
    environment = batch.create_compute_environment(
        computeEnvironmentName=f"ce-{tag}",
        type="MANAGED",
        state="ENABLED",
        computeResources={"type": "FARGATE", "maxvCpus": 16, "subnets": [subnet], "securityGroupIds": [group]},
        serviceRole=role,
    )["computeEnvironmentArn"]
    queue = batch.create_job_queue(
        jobQueueName=f"queue-{tag}",
        state="ENABLED",
        priority=1,
        computeEnvironmentOrder=[{"order": 1, "computeEnvironment": environment}],
    )["jobQueueArn"]
    secrets = session.client("secretsmanager")

    def secret(name: str, value: str) -> str:
        return secrets.create_secret(Name=f"{name}-{tag}", SecretString=value)["ARN"]

    env = fresh_env(s3_env, model_dir, DATABASE_URL=database_url)  # the planner claims files in the ledger
    return {
        **env,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "NAME_PREFIX": f"wb-{tag}",
        "JOB_QUEUE": queue,  # the coordinator's
        "JOB_QUEUE_ARN": queue,  # deploy.sh's
        "COORDINATOR_JOB_DEFINITION": f"wb-{tag}-vectorization-job",
        "DATABASE_URL_SECRET_ARN": secret("db", database_url),
        "SHARD_DATABASE_URL_SECRET_ARN": secret("db-reader", database_url),
        "PARTIALS_SECRET_ARN": secret("partials", LOCAL_PARTIALS_SECRET),
        "WEBHOOK_SECRET_ARN": secret("hook", "local-webhook-secret"),
        "WEBHOOK_URL": "https://main.example/batch-complete",
        "IMAGE_TAG": "test",
        "PYTHON": sys.executable,
    }


@pytest.fixture
def dead_port() -> Iterator[int]:
    """A port bound and never listened on for the whole test: connections are refused, and no
    other process can start listening there meanwhile."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])
