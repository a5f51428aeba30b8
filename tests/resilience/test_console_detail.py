"""A dead letter's detail page, and finding letters in the change list."""

from __future__ import annotations

import uuid
from datetime import timedelta
from html import unescape

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from apps.eventstore.models import Event
from apps.resilience.models import Attempt, Delivery
from apps.sagas.models import SagaInstance, SagaStep
from tests.resilience.conftest import make_letter, request_job, store_raw_event
from tests.resilience.console_support import letter

pytestmark = pytest.mark.django_db
CHANGELIST = reverse("admin:resilience_deadletter_changelist")


def found(client: Client, **query: str) -> set[int]:
    page = client.get(CHANGELIST, query)
    assert page.status_code == 200
    return {row.pk for row in page.context["cl"].result_list}


def test_the_list_filters_by_severity_handler_event_type_and_age(operator_client: Client) -> None:
    now = timezone.now()
    recent = letter(severity="critical", event_type="todo.created")
    day_old = letter(handler="notifications.deliver", at=now - timedelta(hours=5))
    ancient = letter(at=now - timedelta(days=30))

    assert found(operator_client, severity__exact="critical") == {recent.pk}
    assert found(operator_client, handler__exact="notifications.deliver") == {day_old.pk}
    assert found(operator_client, event_type__exact="todo.created") == {recent.pk}
    assert found(operator_client, age="hour") == {recent.pk}
    assert found(operator_client, age="day") == {recent.pk, day_old.pk}
    assert found(operator_client, age="older") == {ancient.pk}


def test_the_list_finds_letters_by_event_stream_correlation_and_message(
    operator_client: Client,
) -> None:
    row = store_raw_event(data={"name": "a"})
    mine = letter(event_id=row.event_id, stream_id=row.stream_id, message="ledger drift")
    other = letter(message="something else")

    assert found(operator_client, q=str(row.event_id)) == {mine.pk}
    assert found(operator_client, q=str(row.stream_id)) == {mine.pk}
    assert found(operator_client, q=row.metadata["correlation_id"]) == {mine.pk}
    assert found(operator_client, q="drift") == {mine.pk}
    assert found(operator_client, q="else") == {other.pk}


def test_the_list_links_each_letter_to_its_detail_page(operator_client: Client) -> None:
    one = letter()

    page = operator_client.get(CHANGELIST)

    assert reverse("admin:resilience_deadletter_change", args=[one.pk]).encode() in page.content


def test_the_detail_shows_payload_traceback_attempts_stream_and_trace(
    operator_client: Client,
) -> None:
    first = request_job("trace-me")
    second = request_job("second", stream_id=first.stream_id, version=1)
    dead = make_letter(
        "test.scripted",
        first,
        payload={"name": "trace-me", "url": ""},
        traceback="Traceback (most recent call last):\n  boom",
    )
    delivery = Delivery.objects.create(handler="test.scripted", event_id=first.event_id)
    Attempt.objects.create(
        delivery=delivery, number=1, kind="transient", exception_type="Reset", outcome="retry"
    )
    saga = SagaInstance.objects.create(
        type="test.saga",
        correlation_id=first.metadata.correlation_id,
        trigger_event_id=first.event_id,
    )
    SagaStep.objects.create(saga=saga, step="notify", phase="action", attempt=1, status="failed")
    unrelated = request_job("unrelated")

    page = operator_client.get(reverse("admin:resilience_deadletter_change", args=[dead.pk]))

    assert page.status_code == 200
    html = unescape(page.content.decode())
    assert '{\n  "name": "trace-me",\n  "url": ""\n}' in html
    assert "boom" in html
    assert "Reset" in page.context["letter_attempts"][0].exception_type
    assert [event.event_id for event in page.context["stream_events"]] == [
        first.event_id,
        second.event_id,
    ]
    trace = page.context["trace"]
    whats = [entry.what for entry in trace]
    assert whats[0] == "event test.job.requested"
    assert "saga step notify (action) #1" in whats
    assert f"dead letter #{dead.pk}: transient" in whats
    assert f"delivery of {first.event_id}" in whats
    assert not any(str(unrelated.event_id) in entry.what for entry in trace)
    assert [entry.at for entry in trace] == sorted(entry.at for entry in trace)
    assert "saga step notify" in html


def test_the_trace_lists_other_events_of_the_same_correlation(operator_client: Client) -> None:
    first = request_job("cause")
    dead = make_letter("test.scripted", first)
    correlated = Event.objects.create(
        event_id=uuid.uuid4(),
        stream_type="test.other",
        stream_id=uuid.uuid4(),
        version=1,
        type="test.job.requested",
        data={"name": "effect"},
        metadata={
            "event_id": str(uuid.uuid4()),
            "occurred_at": "2026-01-01T00:00:00+00:00",
            "correlation_id": str(first.metadata.correlation_id),
        },
    )

    page = operator_client.get(reverse("admin:resilience_deadletter_change", args=[dead.pk]))

    wheres = [entry.where for entry in page.context["trace"]]
    assert f"test.other/{correlated.stream_id} v1" in wheres
