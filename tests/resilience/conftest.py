"""Fixtures of the runtime tests: publishing jobs to the real worker and reading outcomes."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest

from apps.eventstore import store
from apps.eventstore.registry import RecordedEvent
from apps.eventstore.store import CommandContext
from apps.resilience.models import Attempt, DeadLetter, Delivery
from tests.resilience.handlers import JobRequested
from tests.support.waiting import wait_until
from tests.support.worker import WorkerProcess, settle


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
def job(celery_worker: WorkerProcess) -> Iterator[Callable[..., RecordedEvent]]:
    """Request jobs handled by the session's real worker; let it settle afterwards."""
    yield request_job
    settle()
