"""The groups page: dead letters by fingerprint, group actions, and each group's triage."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from apps.resilience.models import DeadLetter, DeadLetterAction, Triage, TriageChange
from apps.resilience.services import letter_groups, triage
from tests.resilience.console_support import letter

pytestmark = pytest.mark.django_db
GROUPS = reverse("admin:resilience_deadletter_groups")


def act(fingerprint: str) -> str:
    return reverse("admin:resilience_deadletter_group_action", args=[fingerprint])


def statuses(*letters: DeadLetter) -> list[str]:
    return [DeadLetter.objects.get(pk=one.pk).status for one in letters]


def test_the_groups_page_counts_open_letters_per_fingerprint(operator_client: Client) -> None:
    letter("group-a"), letter("group-a"), letter("group-b")
    letter("group-a", status="resolved")

    page = operator_client.get(GROUPS)

    assert page.status_code == 200
    counts = {row.group["fingerprint"]: row.group["count"] for row in page.context["rows"]}
    assert counts == {"group-a": 2, "group-b": 1}
    assert b'id="group-group-a"' in page.content
    assert b"Retry all" in page.content


def test_the_change_list_links_to_the_groups_page(operator_client: Client) -> None:
    page = operator_client.get(reverse("admin:resilience_deadletter_changelist"))

    assert GROUPS.encode() in page.content


def test_retrying_a_group_retries_its_pending_letters_only(operator_client: Client) -> None:
    first, second = letter("group-a"), letter("group-a")
    other = letter("group-b")

    operator_client.post(act("group-a"), {"verb": "retry"})

    assert statuses(first, second, other) == ["retrying", "retrying", "pending"]
    assert DeadLetterAction.objects.filter(action="retry").count() == 2
    assert not DeadLetterAction.objects.filter(dead_letter=other).exists()


def test_a_large_group_is_retried_in_passes_that_each_end_in_time(
    operator_client: Client, settings
) -> None:
    settings.CONSOLE_GROUP_ACTION_SECONDS = 0.0001  # each pass stops after one letter
    first, second = letter("group-a"), letter("group-a")

    page = operator_client.post(act("group-a"), {"verb": "retry"}, follow=True)

    assert statuses(first, second) == ["retrying", "pending"]
    notes = [str(m) for m in page.context["messages"]]
    assert "1 more not reached in this pass: retry the group again." in notes
    operator_client.post(act("group-a"), {"verb": "retry"})
    assert statuses(first, second) == ["retrying", "retrying"]


def test_resolving_a_group_asks_for_notes_then_resolves_every_letter(
    operator_client: Client,
) -> None:
    first, second, other = letter("group-a"), letter("group-a"), letter("group-b")

    asked = operator_client.post(act("group-a"), {"verb": "resolve"})
    assert asked.status_code == 200
    assert b"Notes" in asked.content
    assert statuses(first, second) == ["pending", "pending"]

    operator_client.post(act("group-a"), {"verb": "resolve", "confirm": "1", "notes": "fixed"})

    assert statuses(first, second, other) == ["resolved", "resolved", "pending"]
    audit = DeadLetterAction.objects.filter(action="resolve")
    assert sorted(audit.values_list("dead_letter_id", flat=True)) == sorted([first.pk, second.pk])
    assert set(audit.values_list("notes", flat=True)) == {"fixed"}


def test_discarding_a_group_needs_a_reason(operator_client: Client) -> None:
    first, other = letter("group-a"), letter("group-b")

    operator_client.post(act("group-a"), {"verb": "discard", "confirm": "1", "notes": " "})
    assert statuses(first) == ["pending"]

    operator_client.post(act("group-a"), {"verb": "discard", "confirm": "1", "notes": "noise"})

    assert statuses(first, other) == ["discarded", "pending"]
    assert DeadLetterAction.objects.get(action="discard").dead_letter_id == first.pk


def test_a_triage_moves_along_its_allowed_path_and_keeps_its_history(
    operator_client: Client, django_user_model: type
) -> None:
    letter("group-a")
    olivia = django_user_model.objects.get(username="olivia")
    url = reverse("admin:resilience_deadletter_triage", args=["group-a"])

    operator_client.post(url, {"status": "investigating", "assignee": olivia.pk, "notes": "mine"})
    operator_client.post(url, {"status": "fix_deployed", "notes": "v1.2.3"})

    row = Triage.objects.get(fingerprint="group-a")
    assert (row.status, row.assignee) == ("fix_deployed", olivia)
    history = list(TriageChange.objects.values_list("from_status", "to_status", "notes", "actor"))
    assert history == [
        ("new", "investigating", "mine", olivia.pk),
        ("investigating", "fix_deployed", "v1.2.3", olivia.pk),
    ]
    assert TriageChange.objects.first().to_assignee == "olivia"


def test_an_invalid_triage_move_is_refused_and_not_recorded(operator_client: Client) -> None:
    letter("group-a")
    url = reverse("admin:resilience_deadletter_triage", args=["group-a"])

    response = operator_client.post(url, {"status": "resolved"}, follow=True)

    assert b"can&#x27;t go from new to resolved" in response.content
    assert not TriageChange.objects.exists()
    with pytest.raises(triage.TriageTransitionError):
        triage.change("group-a", actor=None, status="replayed")


def test_a_group_is_overdue_past_the_triage_target(settings: object) -> None:
    settings.DEAD_LETTER_TRIAGE_TARGET_HOURS = 24  # type: ignore[attr-defined]
    old = timezone.now() - timedelta(hours=30)
    letter("old-group", at=old)
    letter("new-group", at=timezone.now() - timedelta(hours=2))
    letter("closed-group", at=old)
    triage.change("closed-group", actor=None, status="wont_fix", notes="known noise")

    overdue = {row.group["fingerprint"]: row.overdue for row in letter_groups.rows()}

    assert overdue == {"old-group": True, "new-group": False, "closed-group": False}
