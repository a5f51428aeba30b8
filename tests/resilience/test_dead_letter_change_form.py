"""A dead letter changes only through the admin's audited actions, never through its form.

Sam is staff with view and change permission on dead letters (not a superuser): he may
retry and resolve from the list, and his letter's own page is view-only.
"""

from __future__ import annotations

import functools
import uuid
from unittest import mock

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.http import HttpRequest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from apps.resilience.admin import DeadLetterAdmin
from apps.resilience.models import DeadLetter, DeadLetterAction
from apps.resilience.services import dead_letters
from tests.support.threads import run_in_threads

pytestmark = pytest.mark.django_db
CHANGELIST = reverse("admin:resilience_deadletter_changelist")


@pytest.fixture
def sam() -> Client:
    user = get_user_model().objects.create_user("sam", password="pw-sam-1", is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(codename__in=["view_deadletter", "change_deadletter"])
    )
    client = Client()
    client.force_login(user)
    return client


def _letter() -> DeadLetter:
    now = timezone.now()
    return DeadLetter.objects.create(
        handler="test.scripted",
        event_id=uuid.uuid4(),
        kind="validation",
        severity="medium",
        exception_type="InvalidInput",
        message="bad payload",
        fingerprint="abc123",
        first_failed_at=now,
        last_failed_at=now,
    )


def _change_url(letter: DeadLetter) -> str:
    return reverse("admin:resilience_deadletter_change", args=[letter.pk])


def test_a_dead_letters_page_is_view_only(sam: Client) -> None:
    page = sam.get(_change_url(_letter()))

    assert page.status_code == 200
    assert b'name="_save"' not in page.content
    assert b'name="_continue"' not in page.content


def test_posting_the_change_form_is_refused_and_writes_nothing(sam: Client) -> None:
    letter = _letter()
    before = DeadLetter.objects.filter(pk=letter.pk).values().get()

    response = sam.post(
        _change_url(letter),
        {"status": "resolved", "message": "rewritten", "attempts": "0", "_save": "Save"},
    )

    assert response.status_code == 403
    assert DeadLetter.objects.filter(pk=letter.pk).values().get() == before
    assert not LogEntry.objects.exists()
    assert not DeadLetterAction.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_the_form_cannot_write_back_over_a_concurrent_resolve(sam: Client) -> None:
    """Saving the form writes every column back as the form loaded it: another operator's
    resolve, committed between that load and the save, would be undone without a trace."""
    letter = _letter()
    load = DeadLetterAdmin.get_object

    def load_then_someone_resolves(
        self: DeadLetterAdmin, request: HttpRequest, object_id: str, from_field: str | None = None
    ) -> DeadLetter | None:
        loaded = load(self, request, object_id, from_field)
        resolve = functools.partial(dead_letters.resolve, actor=None, notes="fixed upstream")
        [done] = run_in_threads(resolve, [(letter.pk,)])  # its own connection: committed
        done.result()
        return loaded

    with mock.patch.object(DeadLetterAdmin, "get_object", load_then_someone_resolves):
        response = sam.post(_change_url(letter), {"_save": "Save"})

    assert response.status_code == 403
    letter.refresh_from_db()
    assert letter.status == DeadLetter.Status.RESOLVED
    assert letter.resolution_notes == "fixed upstream"


def test_the_audited_actions_still_work_for_a_non_superuser(sam: Client) -> None:
    to_retry, to_resolve = _letter(), _letter()

    sam.post(CHANGELIST, {"action": "retry_selected", "_selected_action": [to_retry.pk]})
    sam.post(
        CHANGELIST,
        {
            "action": "resolve_selected",
            "_selected_action": [to_resolve.pk],
            "apply": "1",
            "notes": "fixed upstream",
        },
    )

    to_retry.refresh_from_db()
    to_resolve.refresh_from_db()
    assert to_retry.status == DeadLetter.Status.RETRYING
    assert to_resolve.status == DeadLetter.Status.RESOLVED
    assert to_resolve.resolved_by.username == "sam"
    assert set(
        DeadLetterAction.objects.values_list("dead_letter_id", "action", "actor__username")
    ) == {
        (to_retry.pk, "retry", "sam"),
        (to_resolve.pk, "resolve", "sam"),
    }


def test_an_escalations_own_page_is_view_only_too(sam: Client) -> None:
    from apps.resilience.models import Escalation

    letter = _letter()
    escalated = Escalation.objects.create(
        rule="a new failure group",
        dead_letter=letter,
        fingerprint=letter.fingerprint,
        kind=letter.kind,
        severity=letter.severity,
        count=1,
    )
    user = get_user_model().objects.get(username="sam")
    user.user_permissions.add(
        *Permission.objects.filter(codename__in=["view_escalation", "change_escalation"])
    )
    page = reverse("admin:resilience_escalation_change", args=[escalated.pk])

    response = sam.post(page, {"rule": "rewritten", "count": 99, "notes": "edited"})

    assert response.status_code == 403
    escalated.refresh_from_db()
    assert (escalated.rule, escalated.count, escalated.notes) == ("a new failure group", 1, "")
