"""Sentry hears of final failures only, grouped by the dead letter's fingerprint."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.conf import settings

from apps.eventstore.registry import RecordedEvent
from apps.resilience.models import DeadLetter, Delivery
from tests.resilience.conftest import request_job, wait_for_status
from tests.resilience.handlers import script
from tests.support.broker import drain
from tests.support.http import ControlledServer, controlled_server
from tests.support.waiting import wait_until
from tests.support.worker import WorkerProcess, start_worker

pytestmark = pytest.mark.django_db(transaction=True)
HANDLER = "test.sentry-probe"


@pytest.fixture
def sentry() -> Iterator[ControlledServer]:
    """A local server standing in for Sentry's ingestion endpoint."""
    with controlled_server() as server:
        yield server


@pytest.fixture
def sentry_worker(sentry: ControlledServer, tmp_path: Path) -> Iterator[WorkerProcess]:
    drain(settings.CELERY_BROKER_URL, "sentry-probe")  # jobs of earlier tests, long gone
    dsn = sentry.url.replace("http://", "http://publickey@") + "/42"
    worker = start_worker(tmp_path, concurrency=1, queues="sentry-probe", SENTRY_DSN=dsn)
    yield worker
    worker.stop()


def _sentry_events(server: ControlledServer) -> list[dict]:
    events = []
    for received in list(server.received):
        body = received.body
        if received.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        lines = body.split(b"\n")
        for header, item in zip(lines[1::2], lines[2::2], strict=False):
            if json.loads(header).get("type") == "event":
                events.append(json.loads(item))
    return events


def test_retries_are_not_reported_and_a_dead_letter_is_reported_once_with_its_fingerprint(
    sentry: ControlledServer, sentry_worker: WorkerProcess
) -> None:
    job: Callable[..., RecordedEvent] = request_job
    script("sentry:recovers", "transient", "transient")
    recovered = job("recovers")
    script("sentry:fails", "system")
    failed = job("fails")

    wait_for_status(HANDLER, recovered, Delivery.Status.SUCCEEDED)
    wait_for_status(HANDLER, failed, Delivery.Status.DEAD_LETTERED)
    letter = DeadLetter.objects.get(handler=HANDLER, event_id=failed.event_id)

    events = wait_until(lambda: _sentry_events(sentry), message="Sentry to receive the event")
    assert len(events) == 1
    assert events[0]["fingerprint"] == ["backstop-dead-letter", letter.fingerprint]
    assert events[0]["tags"]["handler"] == HANDLER
    assert events[0]["exception"]["values"][-1]["type"] == "RuntimeError"
