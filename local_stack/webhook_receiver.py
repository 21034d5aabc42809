"""A real HTTP webhook receiver on 127.0.0.1: records what arrives, answers as scripted, checks signatures."""

from __future__ import annotations

import hmac
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

import orjson

from local_stack.http_server import serving
from witple_batch.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    status: int

    @property
    def json(self) -> dict[str, Any]:
        return orjson.loads(self.body)

    def signature_valid(self, secret: str) -> bool:
        expected = sign(self.body, secret, self.headers.get(TIMESTAMP_HEADER, ""))
        return hmac.compare_digest(expected, self.headers.get(SIGNATURE_HEADER, ""))


@dataclass
class WebhookReceiver:
    url: str
    received: list[Received] = field(default_factory=list)
    script: list[int] = field(default_factory=list)  # statuses to answer, in order; then 200; 0 = never answer
    release: threading.Event = field(default_factory=threading.Event)

    def delivered(self) -> list[Received]:
        return [r for r in self.received if 200 <= r.status < 300]

    @classmethod
    @contextmanager
    def running(cls, script: list[int] | None = None) -> Iterator[WebhookReceiver]:
        lock = threading.Lock()
        receiver: WebhookReceiver

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with lock:
                    status = receiver.script.pop(0) if receiver.script else 200
                    receiver.received.append(Received(dict(self.headers.items()), body, status))
                if status == 0:  # a receiver that hangs: the sender is killed or times out
                    receiver.release.wait(60)
                    return
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *_args: Any) -> None:
                pass  # the tests and the runner report deliveries themselves

        release = threading.Event()
        with serving(Handler, on_stop=release.set) as port:
            receiver = cls(url=f"http://127.0.0.1:{port}/batch-complete", script=list(script or []), release=release)
            yield receiver
