"""Poison messages go straight to the dead letters, once, and never block the next message."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest
from celery import current_app
from django.conf import settings
from kombu import Connection, Exchange, Queue

from apps.eventstore import relay
from apps.eventstore.models import OutboxMessage
from apps.eventstore.registry import RecordedEvent
from apps.resilience.models import Attempt, DeadLetter, Delivery
from tests.resilience.conftest import store_raw_event, wait_for_status
from tests.resilience.handlers import effects
from tests.support.waiting import wait_until

pytestmark = pytest.mark.django_db(transaction=True)
Job = Callable[..., RecordedEvent]


def _letter(**filters: object) -> DeadLetter | None:
    return DeadLetter.objects.filter(**filters).first()


def _next_job_still_works(job: Job, name: str) -> None:
    recorded = job(name)
    wait_for_status("test.scripted", recorded, Delivery.Status.SUCCEEDED)
    assert effects("test.scripted", name) == 1


def test_a_stored_payload_that_does_not_fit_its_class_is_one_corruption_dead_letter(
    job: Job,
) -> None:
    row = store_raw_event(data={"title": "not a job"})
    outbox = OutboxMessage.objects.create(event=row)
    relay.publish_pending(ids=[outbox.pk])

    letter = wait_until(
        lambda: _letter(handler="test.scripted", event_id=row.event_id), message="DL"
    )

    assert (letter.kind, letter.severity, letter.attempts) == ("corruption", "critical", 1)
    assert letter.payload == {"title": "not a job"}
    assert "EventDecodeError" in letter.exception_type
    assert not Attempt.objects.filter(delivery__event_id=row.event_id, outcome="retry").exists()
    _next_job_still_works(job, "after-bad-payload")


def test_a_message_naming_no_valid_event_is_a_corruption_dead_letter(job: Job) -> None:
    current_app.send_task(
        "backstop.deliver", args=("test.scripted", "not-a-uuid"), queue="handlers"
    )

    letter = wait_until(
        lambda: _letter(handler="test.scripted", payload__event_id="not-a-uuid"), message="DL"
    )

    assert (letter.kind, letter.event_id) == ("corruption", None)
    _next_job_still_works(job, "after-bad-id")


def test_a_message_for_an_unregistered_handler_is_a_configuration_dead_letter(job: Job) -> None:
    recorded = job("orphan")
    current_app.send_task(
        "backstop.deliver", args=("test.no-such-handler", str(recorded.event_id)), queue="handlers"
    )

    letter = wait_until(lambda: _letter(handler="test.no-such-handler"), message="DL")

    assert (letter.kind, letter.severity) == ("configuration", "critical")


def test_an_undecodable_message_body_is_kept_as_a_dead_letter(job: Job) -> None:
    with Connection(settings.CELERY_BROKER_URL) as conn:
        producer = conn.Producer()
        producer.publish(
            b"{this is not json",
            exchange=Exchange("handlers", type="direct"),
            routing_key="handlers",
            declare=[
                Queue("handlers", Exchange("handlers", type="direct"), routing_key="handlers")
            ],
            content_type="application/json",
            content_encoding="utf-8",
            headers={"task": "backstop.deliver", "id": str(uuid.uuid4())},
        )

    letter = wait_until(lambda: _letter(handler="(undecodable message)"), message="DL")

    assert letter.kind == "corruption"
    assert "{this is not json" in letter.payload["body"]
    _next_job_still_works(job, "after-undecodable")


def test_a_message_for_an_unknown_task_is_kept_as_a_dead_letter(job: Job) -> None:
    current_app.send_task("backstop.no-such-task", args=(1,), queue="handlers")

    letter = wait_until(lambda: _letter(handler="(unknown task)"), message="DL")

    assert letter.kind == "corruption"
    _next_job_still_works(job, "after-unknown-task")


def test_a_delivery_with_missing_arguments_is_kept_as_a_dead_letter(job: Job) -> None:
    current_app.send_task("backstop.deliver", args=("only-one-argument",), queue="handlers")

    letter = wait_until(lambda: _letter(handler="(malformed task call)"), message="DL")

    assert letter.kind == "corruption"
    assert "only-one-argument" in letter.payload["body"]
    _next_job_still_works(job, "after-malformed")
