"""Webhook safety: no request forgery towards private addresses, and bodies signed with the
secret shown once.

Production settings (``WEBHOOK_ALLOW_PRIVATE`` off) refuse any URL Backstop must not call,
when it is set through the API and again at delivery time (DNS may have changed since).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from celery import current_app
from django.core.cache import cache
from django.utils import timezone

from apps.eventstore.store import CommandContext
from apps.notifications import services
from apps.notifications.aggregates import REQUESTED, Notification
from apps.notifications.channels import send_webhook
from apps.notifications.models import NotificationSettings, NotificationState
from apps.reminders.models import ReminderState
from apps.resilience.breakers import CircuitBreaker
from apps.resilience.taxonomy import InvalidInput, SecurityViolation
from tests.support.api import Api
from tests.support.http import ControlledServer, controlled_server
from tests.support.waiting import wait_until

BREAKER = "webhook:127.0.0.1"
PRIVATE_TARGETS = [
    "https://127.0.0.1/hook",
    "https://10.0.0.1/hook",
    "https://169.254.169.254/latest/meta-data/",
    "https://[::1]/hook",
    "https://localhost/hook",
    "https://0.0.0.0/hook",
    "https://[::ffff:127.0.0.1]/hook",
    "https://2130706433/hook",  # 127.0.0.1 written as one number
    "https://192.168.1.1/hook",
]


@pytest.fixture
def fresh_breaker(worker: object) -> Iterator[None]:
    """Start (and leave) the shared webhook breaker closed, with no cooldown in force."""
    CircuitBreaker(BREAKER).reset()
    cache.delete(f"cooldown:{BREAKER}")
    yield
    CircuitBreaker(BREAKER).reset()
    cache.delete(f"cooldown:{BREAKER}")


@pytest.fixture
def production(settings: Any) -> Any:
    settings.WEBHOOK_ALLOW_PRIVATE = False
    return settings


@pytest.fixture
def receiver() -> Iterator[ControlledServer]:
    with controlled_server() as server:
        yield server


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


def a_notification(owner_id: int) -> Notification:
    return Notification.request(
        owner_id=owner_id,
        channel="webhook",
        source_event_id=uuid.uuid4(),
        source_type="reminder.triggered",
        occurred_at=timezone.now(),
        body={"todo": {"title": "Call mum"}, "reminder": {}},
    )


# -- set through the API ------------------------------------------------------------------


@pytest.mark.django_db
def test_a_public_https_url_is_accepted_in_production(alice: Api, production: Any) -> None:
    response = alice.patch("me/", {"webhook_url": "https://1.1.1.1/hook"})

    assert response.status_code == 200, response.json()
    assert response.json()["webhook_url"] == "https://1.1.1.1/hook"
    assert response.json()["webhook_secret"]


@pytest.mark.django_db
def test_a_plain_http_url_is_refused_in_production(alice: Api, production: Any) -> None:
    response = alice.patch("me/", {"webhook_url": "http://1.1.1.1/hook"})

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid"
    assert "https" in response.json()["error"]["message"]
    assert alice.get("me/").json()["webhook_url"] == ""


@pytest.mark.django_db
@pytest.mark.parametrize("url", PRIVATE_TARGETS)
def test_a_url_reaching_a_private_address_is_refused_as_invalid_input_in_production(
    alice: Api, production: Any, url: str
) -> None:
    """The user sent an unusable URL: a 400 like any invalid input, never a 500."""
    response = alice.patch("me/", {"webhook_url": url})

    assert response.status_code == 400, response.json()
    assert response.json()["error"]["code"] == "invalid"
    assert "non-public" in response.json()["error"]["message"]
    assert (
        not NotificationSettings.objects.filter(user_id=alice.user.pk)
        .exclude(webhook_url="")
        .exists()
    )


@pytest.mark.django_db
def test_a_url_carrying_credentials_is_refused(alice: Api, production: Any) -> None:
    response = alice.patch("me/", {"webhook_url": "https://user:secret@1.1.1.1/hook"})

    assert response.status_code == 400
    assert "credentials" in response.json()["error"]["message"]
    assert alice.get("me/").json()["webhook_url"] == ""


@pytest.mark.django_db
def test_a_host_that_does_not_resolve_is_refused(alice: Api, production: Any) -> None:
    response = alice.patch("me/", {"webhook_url": "https://hooks.no-such-name.invalid/x"})

    assert response.status_code == 400
    assert "does not resolve" in response.json()["error"]["message"]
    assert alice.get("me/").json()["webhook_url"] == ""


# -- checked again at delivery time ---------------------------------------------------------


@pytest.mark.django_db
def test_delivery_refuses_a_private_https_target_before_connecting(
    alice: Api, production: Any, listener: Listener
) -> None:
    for host in ("127.0.0.1", "localhost"):
        with pytest.raises(SecurityViolation, match="non-public"):
            send_webhook(
                a_notification(alice.user.pk), f"https://{host}:{listener.port}/hook", "secret"
            )

    assert listener.connections() == 0


@pytest.mark.django_db
def test_delivery_refuses_a_stored_private_url_that_production_would_not_call(
    alice: Api, settings: Any, receiver: ControlledServer
) -> None:
    """A URL stored while private targets were allowed is not called once they are not;
    the same delivery, allowed, does reach the receiver (so the check is what stopped it)."""
    # "localhost", not 127.0.0.1: a breaker of its own ("webhook:localhost"), which only
    # this test uses, so no other test's failures can hold this call back.
    url = receiver.url.replace("127.0.0.1", "localhost") + "/hook"
    NotificationSettings.objects.create(
        user_id=alice.user.pk, webhook_url=url, webhook_secret="s3cret"
    )
    notification = a_notification(alice.user.pk)
    services.repository.save(notification, CommandContext(actor_id="tests"))
    context = CommandContext(actor_id="system")

    settings.WEBHOOK_ALLOW_PRIVATE = False
    with pytest.raises(InvalidInput, match="https"):
        services.deliver(notification.id, context)
    assert receiver.count() == 0
    assert services.repository.load(notification.id).status == REQUESTED

    settings.WEBHOOK_ALLOW_PRIVATE = True
    services.deliver(notification.id, context)
    assert receiver.count() == 1
    assert receiver.received[0].headers["Idempotency-Key"] == str(notification.id)


@pytest.mark.django_db
def test_delivery_refuses_a_stored_name_that_now_resolves_to_a_private_address(
    alice: Api, production: Any, listener: Listener
) -> None:
    """DNS can change after the URL was checked: the delivery checks it again."""
    NotificationSettings.objects.create(
        user_id=alice.user.pk,
        webhook_url=f"https://localhost:{listener.port}/hook",
        webhook_secret="s3cret",
    )
    notification = a_notification(alice.user.pk)
    services.repository.save(notification, CommandContext(actor_id="tests"))

    with pytest.raises(SecurityViolation):
        services.deliver(notification.id, CommandContext(actor_id="system"))

    assert listener.connections() == 0
    assert services.repository.load(notification.id).status == REQUESTED


# -- the signature ------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("worker", "fresh_breaker")
def test_the_signature_is_the_hmac_of_the_raw_body_with_the_latest_secret_shown(
    alice: Api, receiver: ControlledServer
) -> None:
    url = receiver.url + "/hook"
    first = alice.patch("me/", {"webhook_url": url}).json()["webhook_secret"]
    rotated = alice.patch("me/", {"webhook_url": url, "rotate_webhook_secret": True}).json()
    secret = rotated["webhook_secret"]
    assert secret != first
    todo = alice.create(title="Sign me")
    soon = (timezone.now() + timedelta(minutes=5)).isoformat()
    reminder = alice.post(
        f"todos/{todo['id']}/reminders/", {"remind_at": soon, "channels": ["webhook"]}
    ).json()
    ReminderState.objects.filter(reminder_id=reminder["id"]).update(
        remind_at=timezone.now() - timedelta(seconds=1)
    )

    current_app.send_task("backstop.reminders.fire_due", queue="maintenance")

    state = wait_until(
        lambda: NotificationState.objects.filter(status="sent").first(),
        message="the webhook delivery",
    )
    [received] = receiver.received
    assert received.headers["Idempotency-Key"] == str(state.notification_id)
    signature = received.headers["X-Backstop-Signature"]
    expected = "sha256=" + hmac.new(secret.encode(), received.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(signature, expected)
    stale = "sha256=" + hmac.new(first.encode(), received.body, hashlib.sha256).hexdigest()
    assert signature != stale
    # It signs the bytes as sent: the same JSON re-serialised differently would not match.
    loose = json.dumps(json.loads(received.body), indent=2).encode()
    assert signature != "sha256=" + hmac.new(secret.encode(), loose, hashlib.sha256).hexdigest()
