"""A real HTTP server the tests control: it answers what it is told and counts what it gets."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to wait before answering (a hanging server)


@dataclass
class Received:
    at: float
    path: str
    headers: dict[str, str]
    body: bytes


class ControlledServer:
    """Answers each request with the next scripted ``Reply`` (then ``default``), on 127.0.0.1."""

    def __init__(self) -> None:
        self.default = Reply()
        self.script: list[Reply] = []
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def then(self, *replies: Reply) -> None:
        with self._lock:
            self.script.extend(replies)

    def count(self) -> int:
        with self._lock:
            return len(self.received)

    def _next(self, received: Received) -> Reply:
        with self._lock:
            self.received.append(received)
            return self.script.pop(0) if self.script else self.default

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                reply = server._next(Received(time.time(), self.path, dict(self.headers), body))
                if reply.delay:
                    time.sleep(reply.delay)  # the scripted hang itself, not a wait in a test
                payload = json.dumps({"status": reply.status}).encode()
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                return

        return Handler

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@contextmanager
def controlled_server() -> Iterator[ControlledServer]:
    server = ControlledServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()
