"""Telling a user they completed a todo, on the channels they chose on /me/ (none by default).

``completion_channels`` is set through the API; ``request_for_completion`` (the completion
saga's last step) is called directly, with no worker, and must request once however often
it runs. Delivery is the existing ``services.deliver``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.core import mail
from django.utils import timezone

from apps.eventstore.models import Event
from apps.eventstore.registry import RecordedEvent
from apps.eventstore.store import CommandContext, to_recorded
from apps.notifications import services
from apps.notifications.models import NotificationSettings, NotificationState
from apps.reminders import services as reminders
from apps.todos.events import TodoCompleted
from apps.todos.services import complete_todo, create_todo
from tests.support.api import Api

pytestmark = pytest.mark.django_db

CONTEXT = CommandContext(actor_id="system")
HOOK = "http://127.0.0.1:9/hook"


def completed(api: Api, title: str = "Water plants") -> RecordedEvent:
    todo = create_todo(owner_id=api.user.pk, context=CONTEXT, title=title).id
    complete_todo(owner_id=api.user.pk, todo_id=todo, context=CONTEXT)
    return to_recorded(Event.objects.get(stream_id=todo, type="todo.completed"))


def choose(api: Api, channels: list[str], webhook_url: str = "") -> None:
    """Store the user's choice as /me/ would (the webhook's host is not resolved here)."""
    NotificationSettings.objects.update_or_create(
        user=api.user, defaults={"completion_channels": channels, "webhook_url": webhook_url}
    )


def requested_events() -> int:
    return Event.objects.filter(type="notification.requested").count()


# -- /me/ ---------------------------------------------------------------------------------


def test_no_channel_is_chosen_at_first(alice: Api) -> None:
    assert alice.get("me/").json()["completion_channels"] == []


def test_a_user_chooses_their_completion_channels(alice: Api) -> None:
    response = alice.patch("me/", {"completion_channels": ["email"]})

    assert response.status_code == 200, response.json()
    assert response.json()["completion_channels"] == ["email"]
    assert alice.get("me/").json()["completion_channels"] == ["email"]
    cleared = alice.patch("me/", {"completion_channels": []})
    assert cleared.json()["completion_channels"] == []


def test_webhook_can_be_chosen_with_a_webhook_url_in_the_same_request(alice: Api) -> None:
    response = alice.patch("me/", {"webhook_url": HOOK, "completion_channels": ["webhook"]})

    assert response.status_code == 200, response.json()
    assert response.json()["completion_channels"] == ["webhook"]


@pytest.mark.parametrize(
    "channels",
    [["sms"], ["email", "email"], "email", [["email"]], [None], None, {"email": True}],
    ids=["unknown", "twice", "not-a-list", "nested", "null-item", "null", "object"],
)
def test_invalid_completion_channels_are_a_400_naming_the_field(alice: Api, channels: Any) -> None:
    response = alice.patch("me/", {"completion_channels": channels})

    assert response.status_code == 400
    error = response.json()["error"]
    assert list(error["fields"]) == ["completion_channels"]
    assert error["message"] == "Invalid input: completion_channels"
    assert alice.get("me/").json()["completion_channels"] == []


def test_a_channel_given_twice_says_so(alice: Api) -> None:
    response = alice.patch("me/", {"completion_channels": ["email", "email"]})

    assert response.json()["error"]["fields"] == {
        "completion_channels": ["Each channel may be given only once."]
    }


def test_webhook_without_a_webhook_url_is_a_400_saying_what_is_missing(alice: Api) -> None:
    response = alice.patch("me/", {"completion_channels": ["email", "webhook"]})

    assert response.status_code == 400
    fields = response.json()["error"]["fields"]
    assert list(fields) == ["completion_channels"]
    assert "webhook_url" in fields["completion_channels"][0]
    assert alice.get("me/").json()["completion_channels"] == []


def test_the_webhook_url_cant_be_cleared_while_webhook_is_chosen(alice: Api) -> None:
    alice.patch("me/", {"webhook_url": HOOK, "completion_channels": ["webhook"]})

    refused = alice.patch("me/", {"webhook_url": ""})
    both = alice.patch("me/", {"webhook_url": "", "completion_channels": []})

    assert refused.status_code == 400
    assert list(refused.json()["error"]["fields"]) == ["completion_channels"]
    assert both.status_code == 200, both.json()
    assert (both.json()["webhook_url"], both.json()["completion_channels"]) == ("", [])


# -- request_for_completion ---------------------------------------------------------------


def test_nothing_is_requested_for_a_user_who_chose_no_channel(alice: Api) -> None:
    assert services.request_for_completion(completed=completed(alice), context=CONTEXT) == []
    assert requested_events() == 0


def test_one_notification_is_requested_per_chosen_channel(alice: Api) -> None:
    choose(alice, ["email", "webhook"], webhook_url="https://hooks.example.com/in")
    event = completed(alice)

    ids = services.request_for_completion(completed=event, context=CONTEXT)

    assert len(ids) == 2
    rows = NotificationState.objects.filter(notification_id__in=ids).order_by("channel")
    assert [(r.channel, r.target, r.status) for r in rows] == [
        ("email", "a***@example.test", "requested"),
        ("webhook", "hooks.example.com", "requested"),
    ]
    assert {(r.source_type, r.source_event_id, r.owner_id) for r in rows} == {
        ("todo.completed", event.event_id, alice.user.pk)
    }
    notification = services.repository.load(ids[0])
    assert isinstance(event.payload, TodoCompleted)
    assert notification.body == {
        "todo": {
            "id": str(event.stream_id),
            "title": "Water plants",
            "completed_at": event.payload.completed_at.isoformat(),
        }
    }


def test_requesting_twice_requests_once_and_returns_the_same_ids(alice: Api) -> None:
    choose(alice, ["email"])
    event = completed(alice)
    first = services.request_for_completion(completed=event, context=CONTEXT)
    choose(alice, ["email", "webhook"], webhook_url="https://hooks.example.com/in")

    second = services.request_for_completion(completed=event, context=CONTEXT)

    assert second == first
    assert requested_events() == 1
    assert NotificationState.objects.count() == 1


def test_a_completion_is_mailed_through_the_usual_delivery(alice: Api, settings: Any) -> None:
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    choose(alice, ["email"])
    [notification_id] = services.request_for_completion(
        completed=completed(alice, title="Pay rent"), context=CONTEXT
    )

    services.deliver(notification_id, CONTEXT)

    [message] = mail.outbox
    assert message.subject == "Completed: Pay rent"
    assert message.to == ["alice@example.test"]
    assert "Completed at" in message.body
    state = NotificationState.objects.get(pk=notification_id)
    assert state.status == "sent"


def test_a_fired_reminder_requests_its_notifications_once_too(
    alice: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reminder's request shares the code: a second run requests nothing more."""
    todo = create_todo(owner_id=alice.user.pk, context=CONTEXT, title="Call mum").id
    at = timezone.now() + timedelta(hours=1)
    reminder = reminders.schedule_reminder(
        owner_id=alice.user.pk, todo_id=todo, remind_at=at, channels=["email"], context=CONTEXT
    ).reminder_id
    real_now = timezone.now
    with monkeypatch.context() as clock:  # the clock is the edge: past the reminder's time
        clock.setattr(timezone, "now", lambda: real_now() + timedelta(hours=2))
        assert reminders.fire_due_reminders() == 1
    triggered = to_recorded(Event.objects.get(stream_id=reminder, type="reminder.triggered"))
    ids = services.request_for_reminder(triggered)

    again = services.request_for_reminder(triggered)

    assert again == ids
    assert len(ids) == 1
    assert requested_events() == 1
