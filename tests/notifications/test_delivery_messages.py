"""What a user reads about a failed delivery (``last_error`` in GET /api/v1/notifications/):
one plain sentence per kind of failure, never an address, a port or an exception's name.

A closed port, a hanging one and a TLS failure read alike, so the list can't be used to scan
ports; the detail stays with the operators (attempts, dead letter, the notification's events).
Each failure here is real: a real send to a real local server, port or mail server.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from django.utils import timezone

from apps.eventstore.models import Event
from apps.eventstore.store import CommandContext
from apps.notifications import channels, failures, services
from apps.notifications.aggregates import Notification
from apps.notifications.models import NotificationState
from apps.resilience.breakers import CircuitBreaker
from apps.resilience.taxonomy import SecurityViolation
from tests.support.api import Api
from tests.support.broker import free_port
from tests.support.http import ControlledServer, Reply, controlled_server

pytestmark = pytest.mark.django_db
BREAKERS = ("webhook:127.0.0.1", "email")
LEAKS = ("127.0.0.1", "Error", "httpx", "apps.", "Errno", "refused", "timed out")


@pytest.fixture(autouse=True)
def closed_breakers() -> Iterator[None]:
    """Every send here really goes out: no breaker opened by an earlier failure holds it."""
    for name in BREAKERS:
        CircuitBreaker(name).reset()
    yield
    for name in BREAKERS:
        CircuitBreaker(name).reset()


@pytest.fixture
def receiver() -> Iterator[ControlledServer]:
    with controlled_server() as server:
        yield server


def requested(owner: Api, channel: str = "webhook") -> Notification:
    """Save a requested notification and its state row, as a fired reminder does."""
    notification = Notification.request(
        owner_id=owner.user.pk,
        channel=channel,
        source_event_id=uuid.uuid4(),
        source_type="reminder.triggered",
        occurred_at=timezone.now(),
        body={"todo": {"title": "Call mum"}, "reminder": {}},
    )
    services.repository.save(notification, CommandContext(actor_id="tests"))
    NotificationState.objects.create(
        notification_id=notification.id,
        owner_id=owner.user.pk,
        channel=channel,
        status=NotificationState.Status.REQUESTED,
        source_type=notification.source_type,
        source_event_id=notification.source_event_id,
    )
    return notification


def failed_webhook(notification: Notification, url: str) -> BaseException:
    """Send for real and return what the failed send raised."""
    with pytest.raises(Exception) as raised:  # noqa: PT011 - which one is the point
        channels.send_webhook(notification, url, "s3cret")
    return raised.value


def shown(owner: Api) -> str:
    [listed] = owner.get("notifications/").json()["results"]
    return listed["last_error"]


def assert_nothing_internal(message: str, *more: str) -> None:
    for leak in (*LEAKS, *more):
        assert leak not in message


@pytest.mark.parametrize("endpoint", ["closed port", "hanging", "not tls"])
def test_an_endpoint_that_cant_be_reached_reads_alike_whatever_the_cause(
    alice: Api, receiver: ControlledServer, settings: Any, endpoint: str
) -> None:
    settings.WEBHOOK_ALLOW_PRIVATE = True
    settings.WEBHOOK_READ_TIMEOUT = 0.2
    port = free_port() if endpoint == "closed port" else int(receiver.url.rsplit(":", 1)[1])
    receiver.default = Reply(delay=1)  # "hanging": answers after the read timeout
    scheme = "https" if endpoint == "not tls" else "http"
    notification = requested(alice)
    exc = failed_webhook(notification, f"{scheme}://127.0.0.1:{port}/hook")
    assert isinstance(exc, httpx.TransportError)  # the operator's detail: refused, timeout…

    services.record_attempt_failed(notification.id, exc)

    assert shown(alice) == "the webhook endpoint could not be reached"
    assert_nothing_internal(shown(alice), str(port))


@pytest.mark.parametrize("status", [403, 500])
def test_an_endpoint_that_answers_an_error_is_named_by_its_status(
    alice: Api, receiver: ControlledServer, settings: Any, status: int
) -> None:
    settings.WEBHOOK_ALLOW_PRIVATE = True
    receiver.default = Reply(status)
    notification = requested(alice)
    exc = failed_webhook(notification, receiver.url + "/hook")

    services.record_attempt_failed(notification.id, exc)

    assert shown(alice) == f"the webhook endpoint answered {status}"
    assert_nothing_internal(shown(alice), receiver.url.rsplit(":", 1)[1])


def test_a_private_target_refused_at_delivery_says_so_without_the_address(
    alice: Api, settings: Any
) -> None:
    settings.WEBHOOK_ALLOW_PRIVATE = False
    notification = requested(alice)
    exc = failed_webhook(notification, "https://localhost:8443/hook")
    assert isinstance(exc, SecurityViolation)

    services.record_attempt_failed(notification.id, exc)

    assert shown(alice) == "the webhook URL leads to a non-public address, so it was not called"
    assert_nothing_internal(shown(alice), "8443", "localhost")


def test_a_mail_server_that_fails_reads_as_the_email_could_not_be_delivered(
    alice: Api, settings: Any
) -> None:
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", free_port()  # nobody listens
    settings.EMAIL_TIMEOUT = 1
    notification = requested(alice, "email")
    with pytest.raises(ConnectionRefusedError) as raised:
        channels.send_email(notification, alice.user.email)

    services.record_attempt_failed(notification.id, raised.value)

    assert shown(alice) == "the email could not be delivered"
    assert_nothing_internal(shown(alice), str(settings.EMAIL_PORT))


def test_a_dead_lettered_notification_keeps_the_users_message_and_the_operators_detail(
    alice: Api, receiver: ControlledServer, settings: Any
) -> None:
    """The dead letter's hook passes the exception's detail: it goes into the event, for
    operators; the user keeps the message of the attempt that failed last."""
    settings.WEBHOOK_ALLOW_PRIVATE = True
    receiver.default = Reply(403)
    notification = requested(alice)
    exc = failed_webhook(notification, receiver.url + "/hook")
    services.record_attempt_failed(notification.id, exc)
    detail = f"httpx.HTTPStatusError: {exc}"

    services.record_failed(
        notification.id, kind="validation", error=detail, context=CommandContext(actor_id="t")
    )

    [listed] = alice.get("notifications/").json()["results"]
    assert (listed["status"], listed["last_error"]) == (
        "failed",
        "the webhook endpoint answered 403",
    )
    [failed] = Event.objects.filter(stream_id=notification.id, type="notification.failed")
    assert failed.data["error"] == detail
    assert receiver.url in failed.data["error"]  # where it went: for the operator


def test_a_notification_failed_without_a_recorded_attempt_gets_a_plain_message(
    alice: Api,
) -> None:
    notification = requested(alice)

    services.record_failed(
        notification.id,
        kind="system",
        error="apps.resilience.taxonomy.InvalidInput: 10.0.0.7:8443 said no",
        context=CommandContext(actor_id="t"),
    )

    assert shown(alice) == failures.WEBHOOK_FAILED
