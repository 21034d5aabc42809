"""A moto S3 server over real HTTP on 127.0.0.1, so boto3 and the AWS CLI speak the S3 protocol."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

REGION = "ap-northeast-2"
# moto accepts any credentials; fixed fake ones keep real ones out of local runs.
FAKE_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
# the run key of local runs (plans and markers are signed, witple_batch/signing.py); a deployment
# takes its own from Secrets Manager
LOCAL_PARTIALS_SECRET = "local-stack-partials-secret-not-for-deployment"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class MotoS3:
    endpoint: str
    _server: Any

    @classmethod
    @contextmanager
    def start(cls, port: int | None = None) -> Iterator[MotoS3]:
        from moto.server import ThreadedMotoServer

        port = port or free_port()
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        try:
            yield cls(endpoint=f"http://127.0.0.1:{port}", _server=server)
        finally:
            server.stop()

    def client_env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            **FAKE_CREDENTIALS,
            "PARTIALS_SECRET": LOCAL_PARTIALS_SECRET,
        }
