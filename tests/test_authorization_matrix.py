"""Every endpoint that takes an id, every method: nobody learns of what isn't theirs.

The endpoints come from the URL conf, so a new one is in the matrix the day it is added:

- Bob asking for Alice's object gets exactly the answer for an id that doesn't exist (a 404
  for every method the endpoint serves; the same 405 or OPTIONS answer for the others).
- Alice giving the id of another kind of her own things (a reminder's id as a todo's, a
  notification's, an event's) gets that same 404: ids are not interchangeable.
- Nobody signed in gets a 401, whatever the method.
- Alice herself reaches every one of them: the 404s above are not the only answer.

An endpoint with an id this matrix doesn't know (``ID_KINDS``), or a method that needs a
body it doesn't have (``VALID_BODIES``), fails the test until it is added here.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from celery import current_app
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.utils import timezone
from rest_framework.test import APIClient

from apps.eventstore.models import Event
from apps.notifications.models import NotificationState
from apps.reminders.models import ReminderState
from tests.support.api import Api
from tests.support.waiting import wait_until
from tests.todos.conftest import projected

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("inline_worker")]

#: The kind of object each URL parameter names.
ID_KINDS = {"todo_id": "todo", "reminder_id": "reminder"}
#: Every kind of id a user can come by.
KINDS = ("todo", "reminder", "notification", "event")
ALL_METHODS = ("get", "head", "post", "put", "patch", "delete", "options")
#: A body each endpoint accepts (keyed by URL name and method): a refusal of the body must
#: not be what answers the request.
VALID_BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("todo-detail", "patch"): {"title": "Bob was here"},
    ("todo-reminders", "post"): {"remind_at": "2099-01-01T09:00:00Z"},
    ("reminder-snooze", "post"): {"minutes": 5},
}
#: URL conf prefixes outside this matrix: the admin site has its own (staff) sign-in; the
#: ops API is staff only, no user owns a saga (tests/sagas/test_ops_api.py: 401, 403).
OUTSIDE = ("admin/", "api/v1/ops/")


@dataclass(frozen=True)
class Endpoint:
    """One URL pattern that takes an id, and the methods its view serves."""

    route: str
    name: str
    parameter: str
    methods: tuple[str, ...]

    @property
    def kind(self) -> str:
        return ID_KINDS[self.parameter]

    def url(self, object_id: str | uuid.UUID) -> str:
        return reverse(self.name, kwargs={self.parameter: object_id})

    def __str__(self) -> str:
        return self.route


def served_methods(callback: Any) -> tuple[str, ...]:
    """Return the HTTP methods a URL pattern's view answers (HEAD with GET)."""
    actions = getattr(callback, "actions", None)  # a ViewSet's route
    if actions is not None:
        methods = set(actions)
    else:
        view_class = callback.view_class
        methods = {m for m in view_class.http_method_names if hasattr(view_class, m)}
        methods -= {"options", "head"}
    if "get" in methods:
        methods.add("head")
    return tuple(m for m in ALL_METHODS if m in methods)


def endpoints_with_ids() -> list[Endpoint]:
    """Return every URL pattern of the URL conf with a parameter, outside ``OUTSIDE``."""
    found: list[Endpoint] = []

    def walk(patterns: list[Any], prefix: str) -> None:
        for pattern in patterns:
            route = prefix + str(pattern.pattern)
            if route.startswith(OUTSIDE):
                continue
            if isinstance(pattern, URLResolver):
                walk(pattern.url_patterns, route)
            elif isinstance(pattern, URLPattern) and pattern.pattern.regex.groupindex:
                [parameter] = pattern.pattern.regex.groupindex  # one id per endpoint so far
                methods = served_methods(pattern.callback)
                found.append(Endpoint(route, pattern.name, parameter, methods))

    walk(get_resolver().url_patterns, "")
    return found


ENDPOINTS = endpoints_with_ids()


@dataclass(frozen=True)
class Things:
    """One of each kind of thing Alice has, by kind: todo, reminder, notification, event."""

    ids: dict[str, str]


@pytest.fixture
def alices(alice: Api) -> Things:
    """Alice's todo (in the read model), a reminder of it that fired, the notification it
    made, and the todo's first event."""
    todo = alice.create(title="Alice's secret")
    projected(todo["id"], 1)
    soon = (timezone.now() + timedelta(hours=1)).isoformat()
    reminder = alice.post(f"todos/{todo['id']}/reminders/", {"remind_at": soon}).json()
    ReminderState.objects.filter(reminder_id=reminder["id"]).update(
        remind_at=timezone.now() - timedelta(seconds=1)
    )
    current_app.send_task("backstop.reminders.fire_due", queue="maintenance")
    notification = wait_until(
        lambda: NotificationState.objects.filter(owner_id=alice.user.pk).first(),
        message="the reminder's notification",
    )
    event = Event.objects.filter(stream_id=todo["id"]).order_by("version").first()
    return Things(
        {
            "todo": todo["id"],
            "reminder": reminder["id"],
            "notification": str(notification.notification_id),
            "event": str(event.event_id),
        }
    )


def send(client: APIClient, endpoint: Endpoint, method: str, object_id: str) -> Any:
    """Send ``method`` to the endpoint for ``object_id``, with a valid body where one is read."""
    client.raise_request_exception = False  # a crash is the 500 a user would see
    body = VALID_BODIES.get((endpoint.name, method))
    return getattr(client, method)(endpoint.url(object_id), body, format="json")


def answer(response: Any, object_id: str) -> tuple[int, str, str, str | None]:
    """Return what a response tells: status, body (the id blanked), content type, ETag."""
    body = response.content.decode().replace(object_id, "<id>")
    return response.status_code, body, response.get("Content-Type", ""), response.get("ETag")


def mismatches(user: Api, endpoint: Endpoint, object_id: str) -> list[str]:
    """Return how ``user``'s answers for ``object_id`` differ from those for a missing id,
    or fail to be a 404 where the endpoint serves the method."""
    missing = str(uuid.uuid4())
    found = []
    for method in ALL_METHODS:
        got = answer(send(user.client, endpoint, method, object_id), object_id)
        baseline = answer(send(user.client, endpoint, method, missing), missing)
        if got != baseline:
            found.append(f"{method.upper()} {endpoint}: {got} but for a missing id {baseline}")
        elif method in endpoint.methods and got[0] != 404:
            found.append(f"{method.upper()} {endpoint}: {got[0]}, not 404: {got[1][:300]}")
    return found


def test_the_matrix_knows_every_endpoint_that_takes_an_id() -> None:
    assert ENDPOINTS, "no endpoint with an id found in the URL conf"
    unknown = [f"{e} ({e.parameter})" for e in ENDPOINTS if e.parameter not in ID_KINDS]
    assert unknown == [], "add their id kinds to ID_KINDS"
    assert all(e.methods for e in ENDPOINTS)
    routes = {e.route for e in ENDPOINTS}
    assert "api/v1/todos/<uuid:todo_id>/events/" in routes  # the enumeration sees actions
    assert "api/v1/reminders/<uuid:reminder_id>/snooze/" in routes


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=str)
def test_bob_gets_the_answer_for_a_missing_id_for_alices_object(
    alices: Things, bob: Api, endpoint: Endpoint
) -> None:
    assert mismatches(bob, endpoint, alices.ids[endpoint.kind]) == []


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=str)
def test_an_id_of_another_kind_gets_the_answer_for_a_missing_id(
    alices: Things, alice: Api, endpoint: Endpoint
) -> None:
    found = []
    for kind in KINDS:
        if kind != endpoint.kind:
            found += [f"{kind} id: {m}" for m in mismatches(alice, endpoint, alices.ids[kind])]
    assert found == []


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=str)
def test_nobody_signed_in_gets_a_401_for_every_method(alices: Things, endpoint: Endpoint) -> None:
    object_id = alices.ids[endpoint.kind]
    answers = {m: send(APIClient(), endpoint, m, object_id) for m in ALL_METHODS}

    statuses = {m: r.status_code for m, r in answers.items()}
    assert statuses == dict.fromkeys(ALL_METHODS, 401)
    for method, response in answers.items():
        if method != "head":
            assert json.loads(response.content)["error"]["code"] == "not_authenticated"


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=str)
def test_alice_reaches_her_own_object_with_every_method(
    alices: Things, alice: Api, endpoint: Endpoint
) -> None:
    object_id = alices.ids[endpoint.kind]
    statuses = {m: send(alice.client, endpoint, m, object_id).status_code for m in endpoint.methods}

    assert {m: s for m, s in statuses.items() if not (200 <= s < 300 or s == 409)} == {}
