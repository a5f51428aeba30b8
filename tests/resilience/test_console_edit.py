"""Editing a dead letter's payload: checked against the event's schema, audited, retried;
and a viewer (view permissions only) is refused every console action."""

from __future__ import annotations

import json

import pytest
from django.test import Client
from django.urls import reverse

from apps.resilience.models import DeadLetter, DeadLetterAction, Triage
from tests.resilience.conftest import make_letter, request_job
from tests.resilience.console_support import letter, viewer_client

pytestmark = pytest.mark.django_db


def edit_url(dead: DeadLetter) -> str:
    return reverse("admin:resilience_deadletter_edit_payload", args=[dead.pk])


@pytest.fixture
def dead() -> DeadLetter:
    recorded = request_job("broken")
    return make_letter(
        "test.scripted", recorded, payload={"name": "broken", "url": "", "breaker": ""}
    )


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"nam": "typo"}), "the event&#x27;s schema refuses it"),
        (json.dumps(["a list"]), "the event&#x27;s schema refuses it"),
    ],
)
def test_an_invalid_payload_is_a_form_error_and_stores_nothing(
    operator_client: Client, dead: DeadLetter, text: str, error: str
) -> None:
    response = operator_client.post(edit_url(dead), {"payload": text})

    assert response.status_code == 200
    assert error in response.content.decode()
    dead.refresh_from_db()
    assert dead.edited_payload is None
    assert dead.status == DeadLetter.Status.PENDING
    assert not DeadLetterAction.objects.exists()


def test_a_valid_payload_is_stored_as_edited_audited_and_retried(
    operator_client: Client, dead: DeadLetter
) -> None:
    form = operator_client.get(edit_url(dead))
    assert '"name": "broken"' in form.content.decode().replace("&quot;", '"')

    response = operator_client.post(edit_url(dead), {"payload": json.dumps({"name": "fixed"})})

    assert response.status_code == 302
    dead.refresh_from_db()
    assert dead.edited_payload == {"name": "fixed"}
    assert dead.payload == {"name": "broken", "url": "", "breaker": ""}
    assert dead.status == DeadLetter.Status.RETRYING
    edit = DeadLetterAction.objects.get(action="edit_payload")
    assert edit.details == {
        "diff": {"breaker": ["", None], "name": ["broken", "fixed"], "url": ["", None]}
    }
    assert edit.actor is not None
    assert edit.actor.get_username() == "olivia"
    assert DeadLetterAction.objects.filter(action="retry").count() == 1


def test_a_viewer_sees_the_pages_without_buttons(dead: DeadLetter) -> None:
    vic = viewer_client()

    detail = vic.get(reverse("admin:resilience_deadletter_change", args=[dead.pk]))
    groups = vic.get(reverse("admin:resilience_deadletter_groups"))

    assert detail.status_code == 200
    assert groups.status_code == 200
    assert b"dry-run-form" not in detail.content
    assert b"edit-payload-link" not in detail.content
    assert b"Retry all" not in groups.content
    assert b"Update triage" not in groups.content


def test_a_viewer_is_refused_every_action(dead: DeadLetter) -> None:
    vic = viewer_client()
    other = letter("group-b")
    group = dead.fingerprint
    posts = [
        (edit_url(dead), {"payload": json.dumps({"name": "fixed"})}),
        (reverse("admin:resilience_deadletter_dry_run", args=[dead.pk]), {}),
        (reverse("admin:resilience_deadletter_group_action", args=[group]), {"verb": "retry"}),
        (
            reverse("admin:resilience_deadletter_group_action", args=[group]),
            {"verb": "discard", "confirm": "1", "notes": "noise"},
        ),
        (
            reverse("admin:resilience_deadletter_group_action", args=["group-b"]),
            {"verb": "resolve", "confirm": "1", "notes": "done"},
        ),
        (reverse("admin:resilience_deadletter_triage", args=[group]), {"status": "investigating"}),
    ]

    codes = [vic.post(url, data).status_code for url, data in posts]

    assert codes == [403] * len(posts)
    assert vic.get(edit_url(dead)).status_code == 403
    changelist = reverse("admin:resilience_deadletter_changelist")
    vic.post(changelist, {"action": "retry_selected", "_selected_action": [dead.pk]})
    assert [DeadLetter.objects.get(pk=pk).status for pk in (dead.pk, other.pk)] == [
        "pending",
        "pending",
    ]
    assert not DeadLetterAction.objects.exists()
    assert not Triage.objects.exists()
