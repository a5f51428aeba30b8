"""Fixtures of the runtime tests: publishing jobs to the real worker and reading outcomes."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from apps.eventstore import store
from apps.eventstore.models import Event
from apps.eventstore.registry import RecordedEvent
from apps.eventstore.store import CommandContext
from apps.resilience.models import Attempt, DeadLetter, Delivery
from tests.resilience.handlers import JobRequested
from tests.support.waiting import wait_until
from tests.support.worker import WorkerProcess


def request_job(
    name: str, *, stream_id: uuid.UUID | None = None, version: int = 0, **fields: str
) -> RecordedEvent:
    """Append a ``test.job.requested`` event; the relay sends it to every test handler."""
    [recorded] = store.append(
        stream_type="test.job",
        stream_id=stream_id or uuid.uuid4(),
        expected_version=version,
        events=[JobRequested(name=name, **fields)],
        context=CommandContext(actor_id="tests"),
    )
    return recorded


def store_raw_event(*, data: dict[str, object], schema_version: int = 1) -> Event:
    """Store a ``test.job.requested`` row as written, bypassing the event classes (a payload
    that doesn't fit, or a schema version from a newer release)."""
    return Event.objects.create(
        event_id=uuid.uuid4(),
        stream_type="test.job",
        stream_id=uuid.uuid4(),
        version=1,
        type="test.job.requested",
        schema_version=schema_version,
        data=data,
        metadata={
            "event_id": str(uuid.uuid4()),
            "occurred_at": "2026-01-01T00:00:00+00:00",
            "correlation_id": str(uuid.uuid4()),
        },
    )


def make_letter(handler: str, recorded: RecordedEvent, **fields: object) -> DeadLetter:
    """Write a dead letter of ``recorded`` for ``handler`` directly (status pending unless
    given), as the runtime would have after a final failure."""
    now = timezone.now()
    defaults: dict[str, object] = {
        "kind": "transient",
        "severity": "high",
        "exception_type": "TransientError",
        "fingerprint": "test",
        "first_failed_at": now,
        "last_failed_at": now,
        "stream_id": recorded.stream_id,
        "event_version": recorded.version,
    }
    return DeadLetter.objects.create(
        handler=handler, event_id=recorded.event_id, **{**defaults, **fields}
    )


def delivery(handler: str, recorded: RecordedEvent) -> Delivery | None:
    return Delivery.objects.filter(handler=handler, event_id=recorded.event_id).first()


def wait_for_status(
    handler: str, recorded: RecordedEvent, *statuses: str, timeout: float = 30
) -> Delivery:
    """Poll until the delivery of ``recorded`` to ``handler`` reaches one of ``statuses``."""

    def reached() -> Delivery | None:
        found = delivery(handler, recorded)
        return found if found is not None and found.status in statuses else None

    return wait_until(reached, timeout=timeout, message=f"{handler} to reach {statuses}")


def attempts(handler: str, recorded: RecordedEvent) -> list[Attempt]:
    return list(
        Attempt.objects.filter(delivery__handler=handler, delivery__event_id=recorded.event_id)
    )


def dead_letter(handler: str, recorded: RecordedEvent) -> DeadLetter:
    return DeadLetter.objects.get(handler=handler, event_id=recorded.event_id)


@pytest.fixture
def job(worker: WorkerProcess) -> Callable[..., RecordedEvent]:
    """Request jobs handled by the session's real worker (settled after the test)."""
    return request_job


@pytest.fixture
def operator_client() -> Client:
    """Olivia runs Backstop: a superuser in the console."""
    user = get_user_model().objects.create_superuser("olivia", "olivia@example.test", "pw-olivia-1")
    client = Client()
    client.force_login(user)
    return client
