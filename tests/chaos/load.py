"""Commands sent through the HTTP API, each with a client-generated id the harness counts by.

Every command carries ``X-Request-ID: <id>`` (it becomes the metadata of the events it
records) and a create carries ``Idempotency-Key: <id>`` too, so a create that got no
answer is sent again safely. The outcome of each is kept: acknowledged (2xx), rejected
(4xx), or failed (5xx or no answer).
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

# Kinds of command and how often each is sent.
MIX = {"create": 40, "update": 25, "complete": 20, "reminder": 15}
RECURRING_SHARE = 0.2
# How far ahead a reminder command asks to be reminded (seconds, drawn evenly). The drain
# waits for every reminder to fire, so a QUICK run keeps them nearer: they still come due
# while the faults of a scenario land.
REMINDERS_AHEAD = (3.0, 20.0)
QUICK_REMINDERS_AHEAD = (3.0, 8.0)  # from 3 s: a slow request's reminder is still ahead
CREATE_ATTEMPTS = 3
# Set when the run is being stopped (the harness's SIGTERM): every load's threads end after
# the command they are sending, so the scenario can unwind and stop what it started.
STOP = threading.Event()


@dataclass
class Command:
    """One command and what became of it."""

    id: str
    kind: str
    status: int | None = None
    stream_id: str | None = None  # the todo (or reminder) the command acted on or created
    error: str = ""
    fault: str | None = None  # a create's fault for the poison handler (in its title)

    @property
    def outcome(self) -> str:
        if self.status is not None and 200 <= self.status < 300:
            return "acknowledged"
        if self.status is not None and 400 <= self.status < 500:
            return "rejected"
        return "failed"


def send(
    command: Command, attempts: int, request: Callable[[], httpx.Response]
) -> httpx.Response | None:
    """Send ``command`` by ``request``, again after no answer or a 5xx, up to ``attempts``
    times; record its status (and the last error) on it; return the last response."""
    response = None
    for _ in range(attempts):
        try:
            response = request()
        except httpx.HTTPError as exc:
            command.error = f"{type(exc).__name__}: {exc}"
            continue
        command.status = response.status_code
        if response.status_code < 500:
            break
        command.error = response.text[:300]
    return response


class Load:
    """Send ``n`` commands over ``threads`` connections; keep every command's outcome.

    ``mix`` weighs the kinds of command; ``faults``, when given, are handed out one per
    create, in order, and named in the todo's title (``None``: no fault); ``quick`` keeps
    reminders nearer (``QUICK_REMINDERS_AHEAD``).
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        seed: int,
        per_second: float,
        *,
        mix: dict[str, int] | None = None,
        recurring_share: float = RECURRING_SHARE,
        faults: list[str | None] | None = None,
        quick: bool = False,
    ) -> None:
        self.base_url, self.token = base_url, token
        self.reminders_ahead = QUICK_REMINDERS_AHEAD if quick else REMINDERS_AHEAD
        self.mix = mix or MIX
        self.recurring_share = recurring_share
        self.faults = list(faults or [])
        # Paced, so the faults of a scenario land while commands still flow.
        self.interval = 1 / per_second
        self.started = time.monotonic()
        self.sent = 0
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.open: list[str] = []  # todos created and not yet sent a completion
        self.commands: list[Command] = []

    def run(self, n: int, threads: int = 4) -> list[Command]:
        per_thread = [n // threads + (1 if i < n % threads else 0) for i in range(threads)]
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(self._thread, per_thread))
        return self.commands

    def _thread(self, count: int) -> None:
        headers = {"Authorization": f"Token {self.token}"}
        with httpx.Client(base_url=self.base_url, headers=headers, timeout=15) as client:
            for _ in range(count):
                if STOP.is_set():
                    return
                command = self._next()
                self._send(client, command)
                with self.lock:
                    self.commands.append(command)

    def _next(self) -> Command:
        with self.lock:
            wait = self.started + self.sent * self.interval - time.monotonic()
            self.sent += 1
        time.sleep(max(0.0, wait))
        with self.lock:
            kind = self.rng.choices(list(self.mix), weights=list(self.mix.values()))[0]
            if kind != "create" and not self.open:
                kind = "create"
            command = Command(id=str(uuid.uuid4()), kind=kind)
            if kind == "create" and self.faults:
                command.fault = self.faults.pop(0)
            if kind == "complete":
                command.stream_id = self.open.pop(self.rng.randrange(len(self.open)))
            elif kind != "create":
                command.stream_id = self.rng.choice(self.open)
            return command

    def _send(self, client: httpx.Client, command: Command) -> None:
        headers = {"X-Request-ID": command.id}
        attempts = CREATE_ATTEMPTS if command.kind == "create" else 1
        body = self._body(command)  # once: a create sent again repeats its body exactly
        response = send(command, attempts, lambda: self._request(client, command, headers, body))
        if command.kind == "create" and command.outcome == "acknowledged":
            assert response is not None
            command.stream_id = response.json()["id"]
            with self.lock:
                self.open.append(command.stream_id)

    def _request(
        self,
        client: httpx.Client,
        command: Command,
        headers: dict[str, str],
        body: dict[str, Any] | None,
    ) -> httpx.Response:
        todo = f"/api/v1/todos/{command.stream_id}/"
        if command.kind == "create":
            return client.post(
                "/api/v1/todos/", json=body, headers={**headers, "Idempotency-Key": command.id}
            )
        if command.kind == "update":
            return client.patch(todo, json=body, headers=headers)
        if command.kind == "complete":
            return client.post(f"{todo}complete/", headers=headers)
        return client.post(f"{todo}reminders/", json=body, headers=headers)

    def _body(self, command: Command) -> dict[str, Any] | None:
        if command.kind == "create":
            return self._todo_body(command)
        if command.kind == "update":
            return {"title": f"chaos update {command.id[:8]}"}
        if command.kind == "complete":
            return None
        remind_at = datetime.now(tz=UTC) + timedelta(
            seconds=self.rng.uniform(*self.reminders_ahead)
        )
        return {"remind_at": remind_at.isoformat(), "channels": ["email"]}

    def _todo_body(self, command: Command) -> dict[str, Any]:
        fault = f" fault:{command.fault}" if command.fault else ""
        body: dict[str, Any] = {
            "title": f"chaos {command.id[:8]}{fault}",
            "due_at": (datetime.now(tz=UTC) + timedelta(days=1)).isoformat(),
        }
        if self.rng.random() < self.recurring_share:
            body["recurrence"] = "daily"
        return body
