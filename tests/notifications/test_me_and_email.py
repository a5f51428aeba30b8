"""The user's own channels (/me/), email deliveries, and the list of deliveries.

Email goes through the real worker, whose Django file email backend writes every message
it sends under ``MAIL_DIR``; the tests read those files back.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage

import pytest
from celery import current_app
from django.core.cache import cache
from django.utils import timezone
from rest_framework.test import APIClient

from apps.eventstore.models import Event
from apps.notifications.models import NotificationState
from apps.reminders.models import ReminderState
from apps.resilience.breakers import CircuitBreaker
from apps.resilience.models import DeadLetter
from tests.support.api import Api
from tests.support.http import ControlledServer, Reply, controlled_server
from tests.support.waiting import wait_until
from tests.support.worker import MAIL_DIR

BREAKER = "webhook:127.0.0.1"
# Django's file backend ends every message it writes with this line.
MAIL_SEPARATOR = b"\n" + b"-" * 79 + b"\n"


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


def fire_reminder(api: Api, channels: list[str], title: str = "Call mum") -> str:
    """Schedule a reminder, make it due and fire it through the worker; return its id."""
    todo = api.create(title=title)
    soon = (timezone.now() + timedelta(minutes=5)).isoformat()
    response = api.post(f"todos/{todo['id']}/reminders/", {"remind_at": soon, "channels": channels})
    assert response.status_code == 201, response.json()
    reminder = response.json()
    ReminderState.objects.filter(reminder_id=reminder["id"]).update(
        remind_at=timezone.now() - timedelta(seconds=1)
    )
    current_app.send_task("backstop.reminders.fire_due", queue="maintenance")
    return reminder["id"]


def notification_of(api: Api, channel: str, *statuses: str) -> NotificationState:
    """Wait for the user's notification on ``channel`` to reach one of ``statuses``."""
    return wait_until(
        lambda: NotificationState.objects.filter(
            owner_id=api.user.pk, channel=channel, status__in=statuses
        ).first(),
        message=f"the {channel} notification to be {statuses}",
    )


def mails_written_since(started: float) -> list[EmailMessage]:
    """Every message the workers' file backend wrote in files changed since ``started``."""
    if not MAIL_DIR.exists():
        return []
    messages = []
    for path in MAIL_DIR.glob("*.log"):
        if path.stat().st_mtime < started:
            continue
        for chunk in path.read_bytes().split(MAIL_SEPARATOR):
            if chunk.strip():
                messages.append(message_from_bytes(chunk, policy=policy.default))
    return messages


def mails_with_key(started: float, key: uuid.UUID) -> list[EmailMessage]:
    return [m for m in mails_written_since(started) if m["Idempotency-Key"] == str(key)]


# -- /me/ ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_me_shows_the_user_and_no_webhook_at_first(alice: Api) -> None:
    response = alice.get("me/")

    assert response.status_code == 200
    assert response.json() == {
        "id": alice.user.pk,
        "username": "alice",
        "email": "alice@example.test",
        "webhook_url": "",
        "webhook_secret_set": False,
        "completion_channels": [],
    }


@pytest.mark.django_db
def test_setting_a_webhook_shows_its_secret_once(alice: Api) -> None:
    url = "http://127.0.0.1:9/hook"

    response = alice.patch("me/", {"webhook_url": url})

    assert response.status_code == 200
    body = response.json()
    assert body["webhook_url"] == url
    assert body["webhook_secret_set"] is True
    secret = body["webhook_secret"]
    assert len(secret) >= 32
    later = alice.get("me/").json()
    assert "webhook_secret" not in later
    assert (later["webhook_url"], later["webhook_secret_set"]) == (url, True)
    # Changing the URL without asking to rotate keeps the secret, and doesn't show it again.
    moved = alice.patch("me/", {"webhook_url": url + "/v2"})
    assert moved.status_code == 200
    assert "webhook_secret" not in moved.json()
    assert moved.json()["webhook_url"] == url + "/v2"


@pytest.mark.django_db
def test_rotating_the_secret_shows_a_new_one(alice: Api) -> None:
    url = "http://127.0.0.1:9/hook"
    first = alice.patch("me/", {"webhook_url": url}).json()["webhook_secret"]

    response = alice.patch("me/", {"webhook_url": url, "rotate_webhook_secret": True})

    assert response.status_code == 200
    second = response.json()["webhook_secret"]
    assert second != first
    assert len(second) >= 32
    assert "webhook_secret" not in alice.get("me/").json()


@pytest.mark.django_db
def test_an_empty_url_clears_the_webhook(alice: Api) -> None:
    alice.patch("me/", {"webhook_url": "http://127.0.0.1:9/hook"})

    response = alice.patch("me/", {"webhook_url": ""})

    assert response.status_code == 200
    assert response.json()["webhook_url"] == ""
    assert "webhook_secret" not in response.json()
    assert alice.get("me/").json()["webhook_url"] == ""


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body",
    [
        {"webhook_url": "http://127.0.0.1:9/hook", "webhook_secret": "mine"},
        {"webhook_url": "http://127.0.0.1:9/hook", "username": "mallory"},
    ],
)
def test_unknown_fields_are_refused(alice: Api, body: dict[str, str]) -> None:
    response = alice.patch("me/", body)

    assert response.status_code == 400
    unknown = (set(body) - {"webhook_url"}).pop()
    assert response.json()["error"]["fields"] == {unknown: ["Unknown field."]}
    assert alice.get("me/").json() == {
        "id": alice.user.pk,
        "username": "alice",
        "email": "alice@example.test",
        "webhook_url": "",
        "webhook_secret_set": False,
        "completion_channels": [],
    }


@pytest.mark.django_db
def test_a_user_sets_and_sees_their_email_address_normalised(alice: Api) -> None:
    response = alice.patch("me/", {"email": "  Alice.New@Example.TEST "})

    assert response.status_code == 200, response.json()
    assert response.json()["email"] == "Alice.New@example.test"  # trimmed, domain lowered
    assert alice.get("me/").json()["email"] == "Alice.New@example.test"
    alice.user.refresh_from_db()
    assert alice.user.email == "Alice.New@example.test"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "email", ["not-an-address", "a@b", "two@@example.test", "x" * 250 + "@e.st"]
)
def test_an_invalid_email_address_is_a_400_naming_the_field(alice: Api, email: str) -> None:
    response = alice.patch("me/", {"email": email, "webhook_url": "http://127.0.0.1:9/hook"})

    assert response.status_code == 400
    error = response.json()["error"]
    assert list(error["fields"]) == ["email"]
    assert error["message"] == "Invalid input: email"
    assert alice.get("me/").json()["email"] == "alice@example.test"  # nothing changed
    assert alice.get("me/").json()["webhook_url"] == ""


@pytest.mark.django_db
def test_a_refused_webhook_leaves_the_email_address_unchanged(alice: Api) -> None:
    response = alice.patch("me/", {"email": "new@example.test", "webhook_url": "ftp://x/"})

    assert response.status_code == 400
    assert list(response.json()["error"]["fields"]) == ["webhook_url"]
    assert alice.get("me/").json()["email"] == "alice@example.test"


@pytest.mark.django_db
def test_bob_never_sees_or_changes_alices_settings(alice: Api, bob: Api) -> None:
    alice_url = "http://127.0.0.1:9/alice"
    alice.patch("me/", {"webhook_url": alice_url})

    mine = bob.get("me/").json()
    changed = bob.patch("me/", {"webhook_url": "http://127.0.0.1:9/bob"}).json()

    assert mine == {
        "id": bob.user.pk,
        "username": "bob",
        "email": "bob@example.test",
        "webhook_url": "",
        "webhook_secret_set": False,
        "completion_channels": [],
    }
    assert (changed["id"], changed["webhook_url"]) == (bob.user.pk, "http://127.0.0.1:9/bob")
    assert alice.get("me/").json()["webhook_url"] == alice_url


@pytest.mark.django_db
def test_me_needs_authentication() -> None:
    anonymous = APIClient()

    assert anonymous.get("/api/v1/me/").status_code == 401
    patched = anonymous.patch("/api/v1/me/", {"webhook_url": ""}, format="json")
    assert patched.status_code == 401
    assert anonymous.get("/api/v1/notifications/").status_code == 401


# -- email --------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("worker")
def test_an_email_reminder_is_mailed_to_the_user_once_with_its_key(alice: Api) -> None:
    started = time.time() - 1  # file times are whole seconds on some file systems

    fire_reminder(alice, ["email"], title="Water the plants")

    state = notification_of(alice, "email", "sent", "failed")
    [mail] = wait_until(
        lambda: mails_with_key(started, state.notification_id), message="the mail file"
    )
    assert mail["Subject"] == "Reminder: Water the plants"
    assert mail["To"] == "alice@example.test"
    assert mail["X-Backstop-Event"] == "reminder.triggered"
    assert "Water the plants" in mail.get_content()
    assert (state.status, state.target, state.attempts) == ("sent", "a***@example.test", 1)
    assert state.sent_at is not None
    assert state.last_error == ""


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("worker")
def test_an_email_reminder_for_a_user_without_an_address_is_dead_lettered(alice: Api) -> None:
    started = time.time() - 1
    alice.user.email = ""
    alice.user.save(update_fields=["email"])

    fire_reminder(alice, ["email"])

    state = notification_of(alice, "email", "sent", "failed")
    assert state.status == "failed"
    assert "no email address" in state.last_error
    letter = wait_until(
        lambda: DeadLetter.objects.filter(handler="notifications.deliver").first(),
        message="the dead letter",
    )
    assert (letter.kind, letter.attempts, letter.stream_id) == (
        "validation",
        1,
        state.notification_id,
    )
    [failed] = Event.objects.filter(stream_id=state.notification_id, type="notification.failed")
    assert failed.data["kind"] == "validation"
    assert mails_with_key(started, state.notification_id) == []


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("worker")
def test_an_email_reminder_goes_to_the_address_set_on_me(alice: Api) -> None:
    started = time.time() - 1
    assert alice.patch("me/", {"email": "alice.new@Example.TEST"}).status_code == 200

    fire_reminder(alice, ["email"], title="Feed the cat")

    state = notification_of(alice, "email", "sent", "failed")
    [mail] = wait_until(
        lambda: mails_with_key(started, state.notification_id), message="the mail file"
    )
    assert mail["To"] == "alice.new@example.test"
    [listed] = alice.get("notifications/").json()["results"]
    assert (listed["status"], listed["target"]) == ("sent", "a***@example.test")


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("worker")
def test_a_failed_webhook_notification_shows_its_host_from_the_start(
    alice: Api, receiver: ControlledServer
) -> None:
    receiver.then(Reply(400))
    url = receiver.url + "/hook/secret-path?token=abc"
    assert alice.patch("me/", {"webhook_url": url}).status_code == 200

    fire_reminder(alice, ["webhook"])

    notification_of(alice, "webhook", "failed")
    [listed] = alice.get("notifications/").json()["results"]
    assert listed["status"] == "failed"
    assert listed["target"] == receiver.url.removeprefix("http://")  # no path, no query


# -- the list of deliveries -----------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("worker", "fresh_breaker")
def test_the_delivery_list_shows_only_the_users_own_newest_first(
    alice: Api, bob: Api, receiver: ControlledServer
) -> None:
    receiver.then(Reply(400))
    alice.patch("me/", {"webhook_url": receiver.url + "/hook"})
    fire_reminder(alice, ["email"], title="First")
    emailed = notification_of(alice, "email", "sent")
    fire_reminder(bob, ["email"], title="Bob's")
    bobs = notification_of(bob, "email", "sent")
    fire_reminder(alice, ["webhook"], title="Second")
    rejected = notification_of(alice, "webhook", "failed")

    listed = alice.get("notifications/").json()["results"]

    assert [
        (n["id"], n["channel"], n["status"], n["attempts"], n["source_type"]) for n in listed
    ] == [
        (str(rejected.notification_id), "webhook", "failed", 1, "reminder.triggered"),
        (str(emailed.notification_id), "email", "sent", 1, "reminder.triggered"),
    ]
    assert "400" in listed[0]["last_error"]
    assert listed[0]["sent_at"] is None
    assert listed[1]["last_error"] == ""
    assert listed[1]["target"] == "a***@example.test"  # masked
    assert listed[0]["target"] == receiver.url.removeprefix("http://")  # host: no path
    assert listed[1]["sent_at"] is not None
    bob_listed = bob.get("notifications/").json()["results"]
    assert [(n["id"], n["status"]) for n in bob_listed] == [(str(bobs.notification_id), "sent")]
