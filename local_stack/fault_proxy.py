"""An HTTP proxy in front of the moto server that injects S3 faults, for the fault-injection tests.

A seeded share of requests is answered 503 SlowDown or 500 InternalError (boto3 retries
those); keys matching `fail_keys` always answer 500 (a permanent fault); requests matching
`hang_when` are held until released (to kill a process in the middle of an upload).
"""

from __future__ import annotations

import http.client
import random
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import unquote, urlparse

from local_stack.http_server import serving

_ERROR = '<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>injected fault</Message></Error>'


@dataclass
class FaultProxy:
    url: str
    upstream: str
    fault_rate: float = 0.0
    fail_keys: tuple[str, ...] = ()
    hang_when: Callable[[str, str], bool] | None = None
    release: threading.Event = field(default_factory=threading.Event)
    injected: int = 0
    hung: threading.Event = field(default_factory=threading.Event)
    _rng: random.Random = field(default_factory=lambda: random.Random(7))

    @classmethod
    @contextmanager
    def running(cls, upstream: str, **settings: Any) -> Iterator[FaultProxy]:
        lock = threading.Lock()
        proxy: FaultProxy
        target = urlparse(upstream)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
                with lock:
                    permanent = any(key in unquote(self.path) for key in proxy.fail_keys)
                    transient = not permanent and proxy._rng.random() < proxy.fault_rate
                    if permanent or transient:
                        proxy.injected += 1
                if proxy.hang_when is not None and proxy.hang_when(self.command, self.path):
                    proxy.hung.set()
                    proxy.release.wait(120)
                if permanent or transient:
                    code, status = (
                        ("InternalError", 500) if permanent or proxy._rng.random() < 0.3 else ("SlowDown", 503)
                    )
                    self._reply(status, {"Content-Type": "application/xml"}, _ERROR.format(code=code).encode())
                    return
                conn = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "proxy-connection")}
                conn.request(self.command, self.path, body=body or None, headers=headers)
                response = conn.getresponse()
                data = response.read()
                out = {k: v for k, v in response.getheaders() if k.lower() not in ("transfer-encoding", "connection")}
                out["Content-Length"] = str(len(data))
                self._reply(response.status, out, data, head=self.command == "HEAD")
                conn.close()

            def _reply(self, status: int, headers: dict[str, str], data: bytes, head: bool = False) -> None:
                self.send_response(status)
                for key, value in headers.items():
                    if key.lower() != "content-length":
                        self.send_header(key, value)
                self.send_header("Content-Length", headers.get("Content-Length", str(len(data))))
                self.end_headers()
                if not head:
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

            def log_message(self, *_args: Any) -> None:
                pass

        release = threading.Event()
        with serving(Handler, on_stop=release.set) as port:
            proxy = cls(url=f"http://127.0.0.1:{port}", upstream=upstream, release=release, **settings)
            yield proxy
