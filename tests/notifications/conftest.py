"""Shared by the notification tests: production's webhook rules, a bare listener, a
notification to send."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.utils import timezone

from apps.notifications.aggregates import Notification


@pytest.fixture
def production(settings: Any) -> Any:
    settings.WEBHOOK_ALLOW_PRIVATE = False
    return settings


class Listener:
    """A bare listening socket: a TCP connection to it is queued even though nobody answers,
    so after a call returns we can tell whether anything connected at all (TLS included)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.setblocking(False)
        self.port: int = self.sock.getsockname()[1]

    def connections(self) -> int:
        count = 0
        while True:
            try:
                conn, _ = self.sock.accept()
            except BlockingIOError:
                return count
            conn.close()
            count += 1

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    bare = Listener()
    try:
        yield bare
    finally:
        bare.close()


def a_notification(owner_id: int = 1) -> Notification:
    """Return a requested webhook notification of ``owner_id`` (not saved)."""
    return Notification.request(
        owner_id=owner_id,
        channel="webhook",
        source_event_id=uuid.uuid4(),
        source_type="reminder.triggered",
        occurred_at=timezone.now(),
        body={"todo": {"title": "Call mum"}, "reminder": {}},
    )
