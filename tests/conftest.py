"""Fixtures that start real services: a moto S3 server over HTTP, embedded PostgreSQL, a webhook receiver."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from local_stack.moto_s3 import MotoS3
from local_stack.postgres import LocalPostgres
from local_stack.webhook_receiver import WebhookReceiver
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
def moto() -> Iterator[MotoS3]:
    with MotoS3.start() as server:
        yield server


@pytest.fixture
def s3_env(moto: MotoS3, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Point boto3 in this process (and children given this env) at the moto server."""
    env = moto.client_env()
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
