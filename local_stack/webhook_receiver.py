"""A real HTTP webhook receiver on 127.0.0.1: records what arrives, answers as scripted, checks signatures."""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

import orjson

from local_stack.http_server import serving


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    status: int

    @property
    def json(self) -> dict[str, Any]:
        return orjson.loads(self.body)

    def signature_valid(self, secret: str, max_age_seconds: float = 300) -> bool:
        """Checked as the main server would, from the documented recipe alone (not the sender's code):
        X-Signature = "sha256=" + hex(HMAC-SHA256(secret, X-Signature-Timestamp + "." + raw body)),
        with a timestamp no older than `max_age_seconds`."""
        timestamp = self.headers.get("X-Signature-Timestamp", "")
        if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > max_age_seconds:
            return False
        mac = hmac.new(secret.encode(), timestamp.encode() + b"." + self.body, hashlib.sha256).hexdigest()
        return hmac.compare_digest("sha256=" + mac, self.headers.get("X-Signature", ""))


@dataclass
class WebhookReceiver:
    url: str
    received: list[Received] = field(default_factory=list)
    script: list[int] = field(default_factory=list)  # statuses to answer, in order; then 200; 0 = never answer
    release: threading.Event = field(default_factory=threading.Event)
    hanging: threading.Event = field(default_factory=threading.Event)  # set when a request is held unanswered

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
                    receiver.hanging.set()
                    receiver.release.wait(60)
                    return
                self.send_response(status)
                if 300 <= status < 400:  # a receiver that moved: a signed notice must not follow it
                    self.send_header("Location", receiver.url + "-moved")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *_args: Any) -> None:
                pass  # the tests and the runner report deliveries themselves

        release = threading.Event()
        with serving(Handler, on_stop=release.set) as port:
            receiver = cls(url=f"http://127.0.0.1:{port}/batch-complete", script=list(script or []), release=release)
            yield receiver
