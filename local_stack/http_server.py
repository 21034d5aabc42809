"""A threaded HTTP server on 127.0.0.1 for the local stand-ins (webhook receiver, S3 fault proxy)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@contextmanager
def serving(handler: type[BaseHTTPRequestHandler], on_stop: Callable[[], None] | None = None) -> Iterator[int]:
    """Serve on a free port in a daemon thread; yields the port; `on_stop` runs before shutdown."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        if on_stop is not None:
            on_stop()
        server.shutdown()
        server.server_close()
