"""Webhook safety: no request forgery towards private addresses, and bodies signed with the
secret shown once.

Production settings (``WEBHOOK_ALLOW_PRIVATE`` off) refuse any URL Backstop must not call,
when it is set through the API and again at delivery time (DNS may have changed since).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from celery import current_app
from django.core.cache import cache
from django.utils import timezone

from apps.eventstore.store import CommandContext
from apps.notifications import services
from apps.notifications.aggregates import REQUESTED
from apps.notifications.channels import send_webhook
from apps.notifications.models import NotificationSettings, NotificationState
from apps.notifications.webhooks import HostDoesNotResolve, check_url, is_public
from apps.reminders.models import ReminderState
from apps.resilience.breakers import CircuitBreaker
from apps.resilience.classify import classify
from apps.resilience.taxonomy import BackstopError, ErrorKind, InvalidInput, SecurityViolation
from tests.notifications.conftest import Listener, a_notification
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
    # IPv6 forms that carry a private IPv4 address, which is what they reach:
    "https://[::127.0.0.1]/hook",  # IPv4-compatible
    "https://[64:ff9b::7f00:1]/hook",  # NAT64 of 127.0.0.1
    "https://[64:ff9b::a9fe:a9fe]/hook",  # NAT64 of the metadata address 169.254.169.254
    "https://[2002:7f00:1::]/hook",  # 6to4 of 127.0.0.1
    "https://[64:ff9b:1::a9fe:a9fe]/hook",  # local-use NAT64: never globally reachable
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
def receiver() -> Iterator[ControlledServer]:
    with controlled_server() as server:
        yield server


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


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("https://8.8.8.8:99999/", "port must be a number from 1 to 65535"),
        ("https://8.8.8.8:0/", "port must be a number from 1 to 65535"),
        ("https://8.8.8.8:abc/", "is not a valid URL"),
        ("https://[::1", "is not a valid URL"),
        ("https:///hook", "has no host"),
    ],
)
def test_a_malformed_url_is_a_400_naming_the_field_not_a_500(
    alice: Api, production: Any, url: str, says: str
) -> None:
    response = alice.patch("me/", {"webhook_url": url})

    assert response.status_code == 400, response.json()
    error = response.json()["error"]
    assert error["code"] == "invalid"
    [message] = error["fields"]["webhook_url"]
    assert says in message
    assert alice.get("me/").json()["webhook_url"] == ""


@pytest.mark.django_db
def test_another_scheme_is_refused_saying_http_and_https_are_accepted_where_both_are(
    alice: Api, settings: Any
) -> None:
    settings.WEBHOOK_ALLOW_PRIVATE = True  # local use: http is accepted too

    response = alice.patch("me/", {"webhook_url": "ftp://127.0.0.1/hook"})

    assert response.status_code == 400, response.json()
    [message] = response.json()["error"]["fields"]["webhook_url"]
    assert message == "The webhook URL must be an http or https URL."


@pytest.mark.django_db
def test_another_scheme_is_refused_saying_https_in_production(alice: Api, production: Any) -> None:
    response = alice.patch("me/", {"webhook_url": "ftp://1.1.1.1/hook"})

    assert response.status_code == 400, response.json()
    assert response.json()["error"]["fields"]["webhook_url"] == ["The webhook URL must use https."]


@pytest.mark.parametrize(
    "url",
    [
        "https://8.8.8.8:99999/",
        "https://8.8.8.8:abc/",
        "https://[::1",
        "https://[::1]:-1/",
        "https://",
        "",
        "https://exa mple.com/",
        "https://[fe80::1%25eth0]/",
        "https://xn--/",
        "https://" + "a" * 300 + ".test/",
    ],
)
def test_checking_a_url_raises_only_errors_of_the_taxonomy(production: Any, url: str) -> None:
    with pytest.raises(BackstopError):
        check_url(url)


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True),
        ("2001:4860:4860::8888", True),
        ("64:ff9b::808:808", True),  # NAT64 of 8.8.8.8
        ("2002:808:808::1", True),  # 6to4 of 8.8.8.8
        ("::ffff:8.8.8.8", True),
        ("224.0.0.1", False),
        ("100.64.0.1", False),
        ("::ffff:127.0.0.1", False),
        ("::127.0.0.1", False),
        ("::", False),
        ("64:ff9b::7f00:1", False),
        ("64:ff9b::a9fe:a9fe", False),
        ("64:ff9b::a00:1", False),  # NAT64 of 10.0.0.1
        ("64:ff9b:1::808:808", False),
        ("2002:7f00:1::", False),
        ("::ffff:0:7f00:1", False),  # IPv4-translated 127.0.0.1
        ("2002:a9fe:a9fe::1", False),
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", False),  # Teredo
        ("fd00::1", False),
        ("fe80::1", False),
        ("ff02::1", False),
    ],
)
def test_an_address_is_public_only_if_what_it_reaches_is(address: str, public: bool) -> None:
    assert is_public(ipaddress.ip_address(address)) is public


# -- checked again at delivery time ---------------------------------------------------------


@pytest.mark.django_db
def test_delivery_refuses_a_private_https_target_before_connecting(
    alice: Api, production: Any, listener: Listener
) -> None:
    for host in ("127.0.0.1", "localhost", "[::ffff:127.0.0.1]"):
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


@pytest.mark.django_db
def test_a_host_that_does_not_resolve_at_delivery_is_transient(production: Any) -> None:
    """The name may come back (an expired domain renewed, a DNS outage): retry, don't give up."""
    with pytest.raises(HostDoesNotResolve) as raised:
        send_webhook(a_notification(1), "https://hooks.no-such-name.invalid/x", "secret")

    assert classify(raised.value).kind is ErrorKind.TRANSIENT
