"""A moto S3 server over real HTTP on 127.0.0.1, so boto3 and the AWS CLI speak the S3 protocol."""

from __future__ import annotations

import logging
import socket
import threading
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


def _dispatcher() -> Any:
    """moto's dispatcher, remembering which backend serves a host.

    moto finds the backend for every request anew, listing and stat-ing the ~200 folders of
    its package under a lock: the server's CPU per GET falls from 2.3 ms to 1.2 ms without it
    (`benchmarks.e2e s3-server`). S3's CPU is not ours on AWS; locally the server shares
    the shards' cores, so its overhead is charged to our read. A host's backend never changes,
    so it is looked up once; every service moto serves still is.
    """
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    class RememberingDispatcher(DomainDispatcherApplication):
        def __init__(self) -> None:
            super().__init__(create_backend_app)
            self._backend_of: dict[str | None, Any] = {}  # one entry per service and region asked

        def get_backend_for_host(self, host: str | None) -> Any:
            # called under the dispatcher's lock
            if host not in self._backend_of:
                self._backend_of[host] = super().get_backend_for_host(host)
            return self._backend_of[host]

    return RememberingDispatcher()


@dataclass
class MotoS3:
    endpoint: str
    _server: Any

    @classmethod
    @contextmanager
    def start(cls, port: int | None = None) -> Iterator[MotoS3]:
        from moto.moto_server.werkzeug_app import MotoRequestHandler
        from werkzeug.serving import make_server

        port = port or free_port()
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
        server = make_server("127.0.0.1", port, _dispatcher(), threaded=True, request_handler=MotoRequestHandler)
        thread = threading.Thread(target=server.serve_forever, name="moto-s3", daemon=True)
        thread.start()
        try:
            yield cls(endpoint=f"http://127.0.0.1:{port}", _server=server)
        finally:
            server.shutdown()
            thread.join()

    def client_env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            **FAKE_CREDENTIALS,
            "PARTIALS_SECRET": LOCAL_PARTIALS_SECRET,
        }
