"""Operators handle dead letters from the admin: every action goes through the services."""

from __future__ import annotations

import uuid

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from apps.resilience.models import DeadLetter, DeadLetterAction

pytestmark = pytest.mark.django_db
CHANGELIST = reverse("admin:resilience_deadletter_changelist")


def _letter(**overrides: object) -> DeadLetter:
    now = timezone.now()
    fields = {
        "handler": "test.scripted",
        "event_id": uuid.uuid4(),
        "kind": "validation",
        "severity": "medium",
        "exception_type": "InvalidInput",
        "message": "bad payload",
        "fingerprint": "abc123",
        "first_failed_at": now,
        "last_failed_at": now,
    }
    return DeadLetter.objects.create(**{**fields, **overrides})


def test_the_dead_letter_list_filters_by_status_and_kind(operator_client: Client) -> None:
    _letter(message="first failure")
    system = _letter(kind="system", severity="critical", message="second failure")
    _letter(kind="system", status="resolved", message="an old one")

    page = operator_client.get(CHANGELIST, {"kind__exact": "system", "status__exact": "pending"})

    assert page.status_code == 200
    assert list(page.context["cl"].result_list) == [system]


def test_resolving_from_the_admin_asks_for_notes_and_records_who(operator_client: Client) -> None:
    letter = _letter()
    form = {"action": "resolve_selected", "_selected_action": [letter.pk]}

    asked = operator_client.post(CHANGELIST, form)
    assert asked.status_code == 200
    assert b"Notes" in asked.content
    letter.refresh_from_db()
    assert letter.status == DeadLetter.Status.PENDING

    operator_client.post(CHANGELIST, {**form, "apply": "1", "notes": "fixed the data by hand"})

    letter.refresh_from_db()
    assert letter.status == DeadLetter.Status.RESOLVED
    assert letter.resolved_by.username == "olivia"
    assert letter.resolution_notes == "fixed the data by hand"
    assert DeadLetterAction.objects.filter(dead_letter=letter, action="resolve").exists()


def test_a_viewer_without_change_permission_cannot_act(operator_client: Client) -> None:
    letter = _letter()
    viewer = get_user_model().objects.create_user("victor", password="pw-victor-1", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_deadletter"))
    client = Client()
    client.force_login(viewer)

    page = client.get(CHANGELIST)
    assert page.status_code == 200
    client.post(
        CHANGELIST,
        {
            "action": "resolve_selected",
            "_selected_action": [letter.pk],
            "apply": "1",
            "notes": "sneaky",
        },
    )

    letter.refresh_from_db()
    assert letter.status == DeadLetter.Status.PENDING
