"""Looking at what reached the broker, and a private Redis the tests can stop and restart."""

from __future__ import annotations

import json
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import current_app
from django.conf import settings
from django.utils import timezone
from kombu import Connection

from tests.support.waiting import wait_until


@dataclass(frozen=True)
class Message:
    """One Celery task message taken off a queue."""

    task: str
    id: str
    args: list[Any]
    kwargs: dict[str, Any]
    eta: datetime | None

    def due(self) -> bool:
        return self.eta is None or self.eta <= timezone.now()


def unacknowledged(client: redis.Redis, queues: tuple[str, ...]) -> list[str]:
    """Return the delivery tags of the messages of ``queues`` that a consumer took and has not
    acknowledged: the Redis transport keeps them in its ``unacked`` hash, as ``[message,
    exchange, routing key]``, until the ack (Celery sends a task through the default exchange
    with its queue's name as the routing key, as ``SimpleQueue`` does)."""
    return [
        tag.decode()
        for tag, raw in client.hgetall("unacked").items()
        if json.loads(raw)[-1] in queues
    ]


def idle(client: redis.Redis, queues: tuple[str, ...]) -> bool:
    """Whether nothing of ``queues`` waits or is held by a consumer. The held messages are
    read first: a task that sends a follow-up and is acknowledged between the two reads
    leaves its follow-up queued, where the second read sees it."""
    return not unacknowledged(client, queues) and not any(client.llen(q) for q in queues)


def forget_queues(broker_url: str, *queues: str) -> None:
    """Delete ``queues`` and the transport's record of their unacknowledged messages: left
    behind, those would come back to the queue in an hour (the visibility timeout), and a
    wait for idle workers on these queues would count them meanwhile."""
    client = redis.Redis.from_url(broker_url)
    tags = unacknowledged(client, queues)
    with client.pipeline() as pipe:
        pipe.delete(*queues)
        if tags:
            pipe.hdel("unacked", *tags)
            pipe.zrem("unacked_index", *tags)
        pipe.execute()


def take_messages(broker_url: str, queue: str) -> Iterator[Message]:
    """Remove and yield every Celery message waiting in ``queue``, oldest first."""
    with Connection(broker_url) as conn:
        simple = conn.SimpleQueue(queue, no_ack=True)
        try:
            while True:
                try:
                    raw = simple.get(block=False)
                except simple.Empty:
                    return
                args, kwargs, _embed = raw.decode()
                headers = raw.headers
                eta = headers.get("eta")
                yield Message(
                    headers["task"],
                    headers["id"],
                    list(args),
                    dict(kwargs),
                    datetime.fromisoformat(eta) if eta else None,
                )
        finally:
            simple.close()


def drain(broker_url: str, queue: str) -> list[dict[str, Any]]:
    """Remove and return every Celery message waiting in ``queue`` (task name, id, args)."""
    return [
        {"task": message.task, "id": message.id, "args": message.args}
        for message in take_messages(broker_url, queue)
    ]


@contextmanager
def celery_broker(url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Send this process's Celery messages to the broker at ``url`` inside the block.

    Celery reads ``CELERY_BROKER_URL`` from the environment before its configuration, and
    keeps its connection and producer pools: all are switched on the way in and out.
    """
    monkeypatch.setenv("CELERY_BROKER_URL", url)
    monkeypatch.setattr(settings, "CELERY_BROKER_URL", url)
    working = current_app.conf.broker_url
    current_app.conf.broker_url = url
    _drop_pools()
    try:
        yield
    finally:
        monkeypatch.undo()
        current_app.conf.broker_url = working
        _drop_pools()


def _drop_pools() -> None:
    """Make Celery open new connections (to the broker now configured) on the next send."""
    current_app._pool = None
    current_app.amqp._producer_pool = None


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class PrivateRedis:
    """A redis-server of the test's own, on its own port: it can be stopped like a real outage."""

    port: int
    process: subprocess.Popen[bytes] | None = None
    # Where it keeps its data across a restart (an append-only file, fsynced on every write);
    # None: nothing is kept, each start is empty.
    data_dir: Path | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                *(
                    ["--appendonly", "no", "--dir", tempfile.gettempdir()]
                    if self.data_dir is None
                    else [
                        "--appendonly",
                        "yes",
                        "--appendfsync",
                        "always",
                        "--dir",
                        str(self.data_dir),
                    ]
                ),
            ],
            stdout=subprocess.DEVNULL,
        )
        wait_until(self._answers, timeout=20, message=f"redis on port {self.port}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False
