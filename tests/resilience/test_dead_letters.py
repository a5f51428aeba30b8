"""The operator's dead-letter services on a real worker: retry, edit, resolve, discard, sweep."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.utils import timezone

from apps.eventstore.models import Event
from apps.eventstore.registry import RecordedEvent
from apps.resilience.models import DeadLetter, DeadLetterAction, Delivery
from apps.resilience.services import dead_letters
from apps.resilience.services.dead_letters import DeadLetterStateError
from tests.resilience.conftest import dead_letter, wait_for_status
from tests.resilience.handlers import effect_stream, effects, script
from tests.support.threads import run_in_threads
from tests.support.waiting import wait_until
from tests.support.worker import settle

pytestmark = pytest.mark.django_db(transaction=True)
Status = DeadLetter.Status
Job = Callable[..., RecordedEvent]


@pytest.fixture
def operator() -> Any:
    return get_user_model().objects.create_user("operator", "operator@example.com")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def dead_lettered(job: Job, name: str, *steps: str) -> tuple[RecordedEvent, DeadLetter]:
    """Request the job ``name`` scripted with ``steps``; return it once it is dead-lettered."""
    script(name, *steps)
    recorded = job(name)
    wait_for_status("test.scripted", recorded, Delivery.Status.DEAD_LETTERED)
    return recorded, dead_letter("test.scripted", recorded)


def trail(letter: DeadLetter) -> list[str]:
    return list(
        DeadLetterAction.objects.filter(dead_letter=letter).values_list("action", flat=True)
    )


def reaches(letter: DeadLetter, status: str, **fields: Any) -> DeadLetter:
    def reached() -> DeadLetter | None:
        found = DeadLetter.objects.get(pk=letter.pk)
        matches = found.status == status and all(getattr(found, k) == v for k, v in fields.items())
        return found if matches else None

    return wait_until(reached, message=f"dead letter #{letter.pk} to be {status} {fields}")


def make_due(*letters: DeadLetter, **fields: Any) -> None:
    DeadLetter.objects.filter(pk__in=[d.pk for d in letters]).update(
        next_retry_at=timezone.now() - timedelta(seconds=1), **fields
    )


# --- retry ------------------------------------------------------------------------------


def test_retrying_a_fixed_dead_letter_reruns_the_handler_on_the_same_event_once(
    job: Job, operator: Any
) -> None:
    name = unique("fixed")
    recorded, letter = dead_lettered(job, name, "validation")  # then "ok": the cause is fixed

    retrying = dead_letters.retry(letter.pk, actor=operator)

    assert retrying.status == Status.RETRYING
    resolved = reaches(letter, Status.RESOLVED)
    settle()
    assert resolved.resolved_at is not None
    assert resolved.resolution_notes == "retry succeeded"
    assert wait_for_status("test.scripted", recorded, Delivery.Status.SUCCEEDED)
    assert effects("test.scripted", name) == 1
    [effect] = Event.objects.filter(stream_id=effect_stream("test.scripted", name))
    assert effect.data["source"] == str(recorded.event_id)  # the same event, re-run
    actions = list(DeadLetterAction.objects.filter(dead_letter=letter))
    assert [(a.action, a.actor) for a in actions] == [
        ("dead_lettered", None),
        ("retry", operator),
        ("retry_succeeded", None),
    ]


def test_a_retry_that_fails_again_goes_back_to_pending_on_the_same_dead_letter(
    job: Job, operator: Any
) -> None:
    name = unique("still-broken")
    recorded, letter = dead_lettered(job, name, "validation", "validation")
    assert letter.attempts == 1

    dead_letters.retry(letter.pk, actor=operator)

    again = reaches(letter, Status.PENDING, attempts=2)
    settle()
    [row] = DeadLetter.objects.filter(handler="test.scripted", event_id=recorded.event_id)
    assert row.pk == letter.pk  # one row per (handler, event), updated
    assert again.kind == "validation"
    assert effects("test.scripted", name) == 0
    assert trail(letter) == ["dead_lettered", "retry", "retry_failed", "dead_lettered"]


def test_a_retry_with_an_edited_payload_runs_the_handler_on_the_edit_and_audits_it(
    job: Job, operator: Any
) -> None:
    name, edited_name = unique("bad-input"), unique("corrected")
    # The original payload would fail again: only the edited one can succeed.
    recorded, letter = dead_lettered(job, name, "validation", "validation")
    edited = {"name": edited_name, "url": "", "breaker": ""}

    dead_letters.retry(letter.pk, actor=operator, payload=edited)

    reaches(letter, Status.RESOLVED)
    settle()
    assert effects("test.scripted", edited_name) == 1
    assert effects("test.scripted", name) == 0
    edit = DeadLetterAction.objects.get(dead_letter=letter, action="edit_payload")
    assert (edit.actor, edit.details) == (operator, {"payload": edited})
    assert trail(letter) == ["dead_lettered", "edit_payload", "retry", "retry_succeeded"]
    stored = Event.objects.get(event_id=recorded.event_id)
    assert stored.data == {"name": name, "url": "", "breaker": ""}
    assert DeadLetter.objects.get(pk=letter.pk).payload == stored.data


# --- resolve and discard ----------------------------------------------------------------


def test_resolving_records_who_when_and_why_and_closes_the_dead_letter(
    job: Job, operator: Any
) -> None:
    _, letter = dead_lettered(job, unique("resolve-me"), "validation")
    before = timezone.now()

    dead_letters.resolve(letter.pk, actor=operator, notes="fixed the upstream record by hand")

    resolved = DeadLetter.objects.get(pk=letter.pk)
    assert resolved.status == Status.RESOLVED
    assert resolved.resolved_by == operator
    assert before <= resolved.resolved_at <= timezone.now()
    assert resolved.resolution_notes == "fixed the upstream record by hand"
    action = DeadLetterAction.objects.get(dead_letter=letter, action="resolve")
    assert (action.actor, action.notes) == (operator, "fixed the upstream record by hand")
    with pytest.raises(DeadLetterStateError):
        dead_letters.retry(letter.pk, actor=operator)
    with pytest.raises(DeadLetterStateError):
        dead_letters.discard(letter.pk, actor=operator, reason="changed my mind")
    assert DeadLetter.objects.get(pk=letter.pk).status == Status.RESOLVED
    assert trail(letter) == ["dead_lettered", "resolve"]


def test_discarding_needs_a_reason_and_a_discarded_dead_letter_cannot_be_retried(
    job: Job, operator: Any
) -> None:
    name = unique("discard-me")
    _, letter = dead_lettered(job, name, "validation")

    for blank in ("", "   "):
        with pytest.raises(DeadLetterStateError):
            dead_letters.discard(letter.pk, actor=operator, reason=blank)
    assert DeadLetter.objects.get(pk=letter.pk).status == Status.PENDING

    before = timezone.now()
    dead_letters.discard(letter.pk, actor=operator, reason="test data, not worth replaying")

    discarded = DeadLetter.objects.get(pk=letter.pk)
    assert discarded.status == Status.DISCARDED
    assert discarded.resolved_by == operator
    assert before <= discarded.resolved_at <= timezone.now()
    assert discarded.resolution_notes == "test data, not worth replaying"
    with pytest.raises(DeadLetterStateError):
        dead_letters.retry(letter.pk, actor=operator)
    assert DeadLetter.objects.get(pk=letter.pk).status == Status.DISCARDED
    assert trail(letter) == ["dead_lettered", "discard"]
    assert effects("test.scripted", name) == 0


# --- statistics and groups --------------------------------------------------------------


def test_stats_count_only_open_dead_letters_by_kind_severity_and_handler(
    job: Job, operator: Any
) -> None:
    names = {k: unique(k) for k in ("medium", "resolved", "low", "hook", "discarded")}
    script(names["medium"], "validation")
    script(names["resolved"], "validation")
    script(names["low"], "not_found")
    script(f"hook:{names['hook']}", "business_rule")
    script(names["discarded"], "system")
    for name in names.values():
        job(name)
    wait_until(lambda: DeadLetter.objects.count() == 5, message="five dead letters")
    by_name = {d.payload["name"]: d for d in DeadLetter.objects.all()}
    dead_letters.resolve(by_name[names["resolved"]].pk, actor=operator)
    dead_letters.discard(by_name[names["discarded"]].pk, actor=operator, reason="known bug")
    # The oldest of all is closed: the age must come from the oldest *open* one.
    now = timezone.now()
    DeadLetter.objects.filter(pk=by_name[names["resolved"]].pk).update(
        first_failed_at=now - timedelta(days=2)
    )
    DeadLetter.objects.filter(pk=by_name[names["medium"]].pk).update(
        first_failed_at=now - timedelta(hours=1)
    )

    stats = dead_letters.stats()

    assert stats["open"] == 3
    assert stats["by_kind"] == {"validation": 1, "not_found": 1, "business_rule": 1}
    assert stats["by_severity"] == {"medium": 1, "low": 2}
    assert stats["by_handler"] == {"test.scripted": 2, "test.hook-raises": 1}
    assert stats["by_status"] == {"pending": 3, "resolved": 1, "discarded": 1}
    assert 3600 <= stats["oldest_age_seconds"] < 3600 + 60


def test_groups_put_dead_letters_raised_from_the_same_place_together(
    job: Job, operator: Any
) -> None:
    first, second, third, other = (unique(p) for p in ("g1", "g2", "g3", "g4"))
    script(first, "validation")
    script(second, "validation")
    script(f"hook:{third}", "validation")  # same exception, same frame, another handler
    script(other, "not_found")  # another exception type from the same frame
    recorded = {name: job(name) for name in (first, second, third, other)}
    wait_until(lambda: DeadLetter.objects.count() == 4, message="four dead letters")
    letters = {
        name: DeadLetter.objects.get(event_id=recorded[name].event_id)
        for name in (first, second, third, other)
    }

    assert letters[first].fingerprint == letters[second].fingerprint
    assert letters[first].fingerprint == letters[third].fingerprint
    assert letters[other].fingerprint != letters[first].fingerprint
    groups = dead_letters.groups()
    assert [(g["fingerprint"], g["kind"], g["count"], g["handlers"]) for g in groups] == [
        (letters[first].fingerprint, "validation", 3, 2),
        (letters[other].fingerprint, "not_found", 1, 1),
    ]
    assert groups[0]["exception_type"] == "apps.resilience.taxonomy.InvalidInput"

    dead_letters.resolve(letters[second].pk, actor=operator)

    assert [(g["kind"], g["count"]) for g in dead_letters.groups()] == [
        ("validation", 2),
        ("not_found", 1),
    ]
    assert [(g["kind"], g["count"]) for g in dead_letters.groups(status=("resolved",))] == [
        ("validation", 1)
    ]


# --- automatic retries ------------------------------------------------------------------


def test_the_sweep_retries_a_due_dead_letter_automatically_once(job: Job) -> None:
    due_name, later_name, manual_name = unique("due"), unique("later"), unique("manual")
    _, due = dead_lettered(job, due_name, "timeout", "timeout", "timeout")
    _, later = dead_lettered(job, later_name, "timeout", "timeout", "timeout")
    _, manual = dead_lettered(job, manual_name, "validation")
    assert due.next_retry_at is not None  # timeouts are retried automatically...
    assert manual.next_retry_at is None  # ...validation errors wait for a person
    make_due(due)

    assert dead_letters.sweep_due() == 1
    assert dead_letters.sweep_due() == 0  # claimed: the next sweep leaves it alone

    resolved = reaches(due, Status.RESOLVED)
    settle()
    assert (resolved.auto_retries, resolved.next_retry_at) == (1, None)
    actions = list(DeadLetterAction.objects.filter(dead_letter=due))
    assert [(a.action, a.actor) for a in actions] == [
        ("dead_lettered", None),
        ("auto_retry", None),
        ("retry_succeeded", None),
    ]
    assert effects("test.scripted", due_name) == 1
    not_due = DeadLetter.objects.get(pk=later.pk)
    assert (not_due.status, not_due.auto_retries) == (Status.PENDING, 0)
    assert DeadLetter.objects.get(pk=manual.pk).status == Status.PENDING
    assert effects("test.scripted", later_name) == effects("test.scripted", manual_name) == 0


def test_two_sweeps_at_the_same_time_retry_each_due_dead_letter_exactly_once(job: Job) -> None:
    names = [unique(f"swept{i}") for i in range(3)]
    for name in names:
        script(name, "timeout", "timeout", "timeout")
    recorded = [job(name) for name in names]
    for event in recorded:
        wait_for_status("test.scripted", event, Delivery.Status.DEAD_LETTERED)
    letters = [dead_letter("test.scripted", event) for event in recorded]
    make_due(*letters)
    start = threading.Barrier(2, timeout=10)

    def sweeper() -> int:
        start.wait()
        return dead_letters.sweep_due()

    retried = [f.result() for f in run_in_threads(sweeper, [(), ()])]

    assert sum(retried) == 3
    for letter in letters:
        reaches(letter, Status.RESOLVED)
    settle()
    for letter, name in zip(letters, names, strict=True):
        assert DeadLetter.objects.get(pk=letter.pk).auto_retries == 1
        assert trail(letter).count("auto_retry") == 1
        assert effects("test.scripted", name) == 1


def test_the_sweep_stops_retrying_a_dead_letter_at_the_automatic_retry_limit(job: Job) -> None:
    limit = settings.DEAD_LETTER_AUTO_RETRY_LIMIT
    spent_name, last_name = unique("spent"), unique("last-chance")
    _, spent = dead_lettered(job, spent_name, "timeout", "timeout", "timeout")
    _, last = dead_lettered(job, last_name, "timeout", "timeout", "timeout")
    make_due(spent, auto_retries=limit)
    make_due(last, auto_retries=limit - 1)

    assert dead_letters.sweep_due() == 1

    reaches(last, Status.RESOLVED, auto_retries=limit)
    settle()
    left = DeadLetter.objects.get(pk=spent.pk)
    assert (left.status, left.auto_retries, left.next_retry_at) == (Status.PENDING, limit, None)
    assert trail(spent) == ["dead_lettered"]
    assert effects("test.scripted", spent_name) == 0
    assert effects("test.scripted", last_name) == 1
    assert dead_letters.sweep_due() == 0
