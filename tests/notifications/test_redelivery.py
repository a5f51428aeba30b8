"""A failed notification delivered again (its dead letter retried): the aggregate's rules
(pure logic) and the delivery service in process, against a real local receiver.

Sent is final: whatever happens after, a notification is never sent twice.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from django.core.cache import cache

from apps.eventstore.models import Event
from apps.eventstore.store import CommandContext
from apps.notifications import services
from apps.notifications.aggregates import FAILED, REQUESTED, SENT, Notification
from apps.notifications.models import NotificationSettings, NotificationState
from apps.resilience.breakers import CircuitBreaker
from tests.support.api import Api
from tests.support.http import ControlledServer, controlled_server

AT = datetime(2026, 12, 24, 18, 0, tzinfo=UTC)
# The receiver is called as "localhost", a breaker no worker-based test opens.
BREAKER = "webhook:localhost"
SYSTEM = CommandContext(actor_id="system")


def _notification(owner_id: int = 1) -> Notification:
    return Notification.request(
        owner_id=owner_id,
        channel="webhook",
        source_event_id=uuid.uuid4(),
        source_type="reminder.triggered",
        occurred_at=AT,
        body={"todo": {"title": "Call mum"}, "reminder": {}},
    )


def _failed() -> Notification:
    notification = _notification()
    notification.failed(kind="validation", error="HTTPStatusError: 400")
    notification.mark_saved()
    return notification


def _types(notification: Notification) -> list[str]:
    return [event.event_type for event in notification.pending_events()]


# -- the aggregate ------------------------------------------------------------------------


def test_a_retried_failed_notification_is_requested_again_then_sent() -> None:
    notification = _failed()

    notification.retry()
    assert notification.status == REQUESTED
    notification.sent(at=AT, target="https://example.test/hook")

    assert _types(notification) == ["notification.retried", "notification.sent"]
    assert notification.status == SENT


def test_a_retried_failed_notification_can_fail_again() -> None:
    notification = _failed()

    notification.retry()
    notification.failed(kind="validation", error="HTTPStatusError: 422")

    assert _types(notification) == ["notification.retried", "notification.failed"]
    assert notification.pending_events()[-1].error == "HTTPStatusError: 422"
    assert notification.status == FAILED


def test_a_failed_notification_is_not_sent_or_failed_again_without_a_retry() -> None:
    notification = _failed()

    notification.sent(at=AT, target="https://example.test/hook")
    notification.failed(kind="transient", error="ConnectError")

    assert _types(notification) == []
    assert notification.status == FAILED


@pytest.mark.parametrize("status", [REQUESTED, SENT])
def test_only_a_failed_notification_can_be_retried(status: str) -> None:
    notification = _notification()
    if status == SENT:
        notification.sent(at=AT, target="https://example.test/hook")
    notification.mark_saved()

    notification.retry()
    notification.sent(at=AT, target="https://example.test/other")

    assert notification.status == SENT
    # Requested: sent now, once. Sent: nothing more, ever (exactly-once sending).
    assert _types(notification) == (["notification.sent"] if status == REQUESTED else [])


def test_the_state_replayed_from_a_retry_is_requested() -> None:
    original = _notification()
    original.failed(kind="validation", error="HTTPStatusError: 400")
    original.retry()

    replayed = Notification(original.id)
    for event in original.pending_events():
        replayed.apply(event)

    assert (replayed.status, replayed.version) == (REQUESTED, 3)


# -- the service, in process --------------------------------------------------------------


@pytest.fixture
def receiver(settings: Any) -> Iterator[ControlledServer]:
    settings.WEBHOOK_ALLOW_PRIVATE = True
    CircuitBreaker(BREAKER).reset()
    cache.delete(f"cooldown:{BREAKER}")
    with controlled_server() as server:
        yield server


def _stored_failed(owner_id: int) -> Notification:
    """Save a requested notification and its state row, then record it dead-lettered."""
    notification = _notification(owner_id)
    services.repository.save(notification, CommandContext(actor_id="tests"))
    NotificationState.objects.create(
        notification_id=notification.id,
        owner_id=owner_id,
        channel="webhook",
        status=NotificationState.Status.REQUESTED,
        attempts=1,
        source_type=notification.source_type,
        source_event_id=notification.source_event_id,
    )
    services.record_failed(
        notification.id, kind="validation", error="HTTPStatusError: 400", context=SYSTEM
    )
    return notification


def _stream(notification_id: uuid.UUID) -> list[str]:
    events = Event.objects.filter(stream_id=notification_id).order_by("version")
    return list(events.values_list("type", flat=True))


@pytest.mark.django_db
def test_delivering_a_failed_notification_sends_it_once_with_its_stable_key(
    alice: Api, receiver: ControlledServer
) -> None:
    url = receiver.url.replace("127.0.0.1", "localhost") + "/hook"
    NotificationSettings.objects.create(
        user_id=alice.user.pk, webhook_url=url, webhook_secret="s3cret"
    )
    notification = _stored_failed(alice.user.pk)

    services.deliver(notification.id, SYSTEM)
    services.deliver(notification.id, SYSTEM)  # a second run finds it sent: sends nothing

    [received] = receiver.received
    assert received.headers["Idempotency-Key"] == str(notification.id)
    assert services.repository.load(notification.id).status == SENT
    assert _stream(notification.id) == [
        "notification.requested",
        "notification.failed",
        "notification.retried",
        "notification.sent",
    ]
    state = NotificationState.objects.get(notification_id=notification.id)
    shown = url.removeprefix("http://").split("/")[0]  # the host, no path
    assert (state.status, state.attempts, state.last_error, state.target) == ("sent", 2, "", shown)
    assert state.sent_at is not None


@pytest.mark.django_db
def test_a_failed_notification_failing_again_records_its_retry_and_the_new_error(
    alice: Api,
) -> None:
    notification = _stored_failed(alice.user.pk)
    request = httpx.Request("POST", "https://10.0.0.7:8443/hook")
    rejected = httpx.Response(422, request=request)
    services.record_attempt_failed(
        notification.id,
        httpx.HTTPStatusError("422 Unprocessable", request=request, response=rejected),
    )

    services.record_failed(
        notification.id, kind="validation", error="HTTPStatusError: 422", context=SYSTEM
    )

    assert _stream(notification.id) == [
        "notification.requested",
        "notification.failed",
        "notification.retried",
        "notification.failed",
    ]
    state = NotificationState.objects.get(notification_id=notification.id)
    # The user reads a plain message; the detail stays in the event, for operators.
    assert (state.status, state.attempts, state.last_error) == (
        "failed",
        2,
        "the webhook endpoint answered 422",
    )
    assert Event.objects.filter(
        stream_id=notification.id, type="notification.failed", data__error="HTTPStatusError: 422"
    ).exists()


@pytest.mark.django_db
def test_a_sent_notification_is_not_recorded_failed_by_a_late_dead_letter(
    alice: Api, receiver: ControlledServer
) -> None:
    url = receiver.url.replace("127.0.0.1", "localhost") + "/hook"
    NotificationSettings.objects.create(user_id=alice.user.pk, webhook_url=url, webhook_secret="s")
    notification = _stored_failed(alice.user.pk)
    services.deliver(notification.id, SYSTEM)

    services.record_attempt_failed(notification.id, RuntimeError("late"))
    services.record_failed(notification.id, kind="transient", error="late", context=SYSTEM)

    assert _stream(notification.id)[-1] == "notification.sent"
    state = NotificationState.objects.get(notification_id=notification.id)
    assert (state.status, state.attempts, state.last_error) == ("sent", 2, "")
    assert receiver.count() == 1
