"""The local services the benchmarks run on (moto S3, the embedded PostgreSQL) and the environment a job gets."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from local_stack.moto_s3 import MotoS3
from local_stack.postgres import LocalPostgres
from local_stack.sample_data import SampleFile, catalogue, ensure_bucket, install_catalogue, upload
from witple_batch.s3 import s3_client

REPO = Path(__file__).resolve().parents[1]


def model_dir() -> str:
    return os.environ.get("MODEL_DIR", str(REPO / ".cache" / "model"))


@dataclass
class Services:
    moto: MotoS3
    pg: LocalPostgres | None
    client: Any  # an S3 client on the moto server

    @property
    def region(self) -> str:
        return self.moto.client_env()["AWS_REGION"]

    def bucket(self, name: str, files: Sequence[SampleFile] = ()) -> str:
        """`name` made if new, with `files` in it."""
        ensure_bucket(self.client, name, self.region)
        upload(self.client, name, list(files))
        return name

    def database(self, catalogue_places: int = 0) -> str:
        """A fresh database; with `catalogue_places`, the main server's sample place catalogue in it."""
        assert self.pg is not None, "started without PostgreSQL"
        url = self.pg.new_database()
        if catalogue_places:
            install_catalogue(url, catalogue(catalogue_places))
        return url

    def env(self, bucket: str, **more: str) -> dict[str, str]:
        """What a job is given: the local S3 and its fake credentials, the input bucket, the model, `more`."""
        return {**self.moto.client_env(), "S3_BUCKET": bucket, "MODEL_DIR": model_dir(), **more}


@contextmanager
def running(postgres: bool = True) -> Iterator[Services]:
    """moto S3 (and PostgreSQL); this process's own clients use the local S3 too."""
    with MotoS3.start() as moto, LocalPostgres.running() if postgres else nullcontext() as pg:
        os.environ.update(moto.client_env())
        yield Services(moto, pg, s3_client(moto.client_env()["AWS_REGION"]))
