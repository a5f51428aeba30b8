"""A local webhook sink: an HTTP server on 127.0.0.1 (a free port) in a thread of the harness
process, logging every call it receives, repeats included, and answering as it is told.

Up, it answers ``200``. Down, it still takes each call (so every call is logged, and counted
against the circuit breaker's promises) and then answers ``503`` (``Mode.ERROR``) or closes
the connection without answering (``Mode.CLOSE``); the client classifies both as transient.
A sink that refused connections instead would see nothing, and could count nothing.

Each call is logged with the time it arrived (``time.time()``: the clock the breakers write
their own times with), its path, its ``Idempotency-Key`` (the notification's id) and
``X-Backstop-Event`` headers, its body and what it was answered: in memory and, when given a
path, as one JSON line per call (and per switch of mode). The mode is read and the call
logged under one lock, so each call is answered by the mode in force when it arrived.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass
from enum import StrEnum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any


class Mode(StrEnum):
    UP = "up"  # answer 200
    ERROR = "error"  # answer 503
    CLOSE = "close"  # close the connection without answering


@dataclass(frozen=True)
class Call:
    """One call the sink received, and how it answered."""

    at: float  # when it arrived (time.time())
    path: str
    key: str  # the Idempotency-Key header ("" when absent)
    event: str  # the X-Backstop-Event header
    body: Any  # the JSON body (the raw text when not JSON)
    mode: Mode
    status: int | None  # the answer; None: closed without one

    @property
    def delivered(self) -> bool:
        """Whether the sink accepted the call (a 2xx answer)."""
        return self.status is not None and 200 <= self.status < 300


class Sink:
    """The webhook sink; ``start`` it, point a webhook at ``url``, switch it ``down``/``up``."""

    def __init__(self, log: Path | None = None) -> None:
        self.log = log
        self.mode = Mode.UP
        self.switches: list[tuple[float, Mode]] = []  # (when, the mode from then on)
        self._calls: list[Call] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="webhook-sink", daemon=True
        )

    @property
    def url(self) -> str:
        port = self._server.server_address[1]
        return f"http://127.0.0.1:{port}/hooks/backstop"

    def start(self) -> Sink:
        if self.log is not None:
            self.log.write_text("")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def __enter__(self) -> Sink:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def down(self, mode: Mode = Mode.ERROR) -> float:
        """Answer every call from now on with a failure; return the time of the switch."""
        assert mode is not Mode.UP
        return self._switch(mode)

    def up(self) -> float:
        """Answer every call from now on with 200; return the time of the switch."""
        return self._switch(Mode.UP)

    def calls(self) -> list[Call]:
        """Return every call received so far, in order of arrival."""
        with self._lock:
            return list(self._calls)

    def _switch(self, mode: Mode) -> float:
        with self._lock:
            self.mode = mode
            at = time.time()
            self.switches.append((at, mode))
            self._write({"at": at, "switch": mode})
        return at

    def _write(self, line: dict[str, Any]) -> None:
        if self.log is not None:
            with self.log.open("a") as out:
                out.write(json.dumps(line) + "\n")

    def _receive(self, path: str, key: str, event: str, raw: bytes) -> Call:
        """Log the call, answered by the mode in force now; return it."""
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = raw.decode(errors="replace")
        with self._lock:
            status = {Mode.UP: 200, Mode.ERROR: 503, Mode.CLOSE: None}[self.mode]
            call = Call(
                at=time.time(),
                path=path,
                key=key,
                event=event,
                body=body,
                mode=self.mode,
                status=status,
            )
            self._calls.append(call)
            self._write(asdict(call))
        return call

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                call = sink._receive(
                    self.path,
                    self.headers.get("Idempotency-Key", ""),
                    self.headers.get("X-Backstop-Event", ""),
                    raw,
                )
                self.close_connection = True
                if call.status is None:
                    return  # the connection closes with no answer at all
                payload = json.dumps({"received": call.key}).encode()
                self.send_response(call.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                return  # the sink's own log says it all

        return Handler
