"""Escalation: which dead letters people hear about, how often, and by which channels."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.core import mail
from django.db import connection, transaction
from django.utils import timezone

from apps.eventstore.registry import RecordedEvent
from apps.resilience.classify import classify
from apps.resilience.escalation_rules import EscalationRule
from apps.resilience.models import DeadLetter, Delivery, Escalation
from apps.resilience.services import dead_letters
from apps.resilience.services.escalation import acknowledge, escalate
from apps.resilience.taxonomy import InvalidInput, NotFound
from tests.resilience.conftest import dead_letter, wait_for_status
from tests.resilience.handlers import script
from tests.support.http import Reply, controlled_server
from tests.support.threads import closing_connections
from tests.support.waiting import wait_until
from tests.support.worker import settle

pytestmark = pytest.mark.django_db(transaction=True)
Job = Callable[..., RecordedEvent]
PROBE = "test.escalation-probe"
ADMINS = [("Operators", "ops@example.com")]


@pytest.fixture
def operator() -> Any:
    return get_user_model().objects.create_user("operator", "operator@example.com")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def dead_lettered(job: Job, step: str, times: int = 1) -> DeadLetter:
    """Run a job that test.scripted fails with ``step``; return its dead letter, all told."""
    name = unique(step)
    script(name, *[step] * times)
    recorded = job(name)
    wait_for_status("test.scripted", recorded, Delivery.Status.DEAD_LETTERED)
    settle()  # escalation runs after the delivery is marked: let the task finish
    return dead_letter("test.scripted", recorded)


def only_rule(**fields: Any) -> EscalationRule:
    """Deactivate the seeded rules and return a new, active one with ``fields``."""
    EscalationRule.objects.update(active=False)
    return EscalationRule.objects.create(**fields)


def _raise(exc: Exception) -> None:
    raise exc


def failure(exc: Exception, handler: str = PROBE) -> DeadLetter:
    """Write the dead letter of ``exc`` raised here (one place: one fingerprint per type)."""
    try:
        _raise(exc)
    except Exception as raised:
        return dead_letters.record(
            handler=handler, exc=raised, classification=classify(raised), attempts=1
        )
    raise AssertionError("unreachable")


# --- on the worker, with the configured rules -------------------------------------------


def test_a_critical_dead_letter_escalates_once_per_group_until_acknowledged(
    job: Job, operator: Any
) -> None:
    first = dead_lettered(job, "system")

    [escalation] = Escalation.objects.all()
    assert escalation.rule == "critical at once"
    assert escalation.dead_letter_id == first.pk
    assert (escalation.fingerprint, escalation.kind, escalation.severity, escalation.count) == (
        first.fingerprint,
        "system",
        "critical",
        1,
    )
    assert escalation.channels == list(django_settings.ESCALATION_CHANNELS)
    assert escalation.acknowledged_at is None

    second = dead_lettered(job, "system")

    assert second.fingerprint == first.fingerprint
    assert list(Escalation.objects.values_list("pk", flat=True)) == [escalation.pk]

    before = timezone.now()
    acknowledge(escalation.pk, actor=operator, notes="looking into it")

    seen = Escalation.objects.get(pk=escalation.pk)
    assert seen.acknowledged_by == operator
    assert before <= seen.acknowledged_at <= timezone.now()
    assert seen.notes == "looking into it"
    someone_else = get_user_model().objects.create_user("late-operator")
    acknowledge(escalation.pk, actor=someone_else, notes="me too")
    assert Escalation.objects.get(pk=escalation.pk).acknowledged_by == operator

    third = dead_lettered(job, "system")  # acknowledged: the group may escalate again

    latest = Escalation.objects.exclude(pk=escalation.pk).get()
    assert (latest.dead_letter_id, latest.rule, latest.count) == (third.pk, "critical at once", 3)


def test_each_new_failure_group_is_escalated_once_then_cools_down(job: Job) -> None:
    letters = [dead_lettered(job, step) for step in ("validation", "validation", "not_found")]
    letters.append(dead_lettered(job, "transient", times=5))  # high: 5 in 15 min escalate

    assert [d.severity for d in letters] == ["medium", "medium", "low", "high"]
    escalated = Escalation.objects.order_by("pk")
    assert [(e.dead_letter_id, e.rule) for e in escalated] == [
        (letters[0].pk, "a new failure group"),  # the second validation: same group, cooling
        (letters[2].pk, "a new failure group"),
        (letters[3].pk, "a new failure group"),
    ]


def test_the_operators_hear_of_a_new_failure_group_by_email(settings) -> None:
    settings.ADMINS = []
    settings.ESCALATION_CHANNELS = ["mail_admins"]
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    get_user_model().objects.create_superuser("olivia", "olivia@example.test", "pw-olivia-1")

    escalation = escalate(failure(NotFound("the todo is gone")))

    assert escalation is not None
    assert escalation.rule == "a new failure group"
    [message] = mail.outbox
    assert message.to == ["olivia@example.test"]
    assert escalate(failure(NotFound("the todo is gone"))) is None  # cooling down


# --- in process, with rules and channels of the test's own ------------------------------


def test_a_group_escalates_when_it_reaches_the_rule_count_within_the_window(settings) -> None:
    only_rule(name="medium, thrice", min_severity="medium", count=3, window_seconds=300)
    settings.ESCALATION_CHANNELS = ["mail_admins"]
    settings.ADMINS = ADMINS
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"

    outcomes = [escalate(failure(InvalidInput("a bad date"))) for _ in range(3)]

    assert outcomes[:2] == [None, None]
    escalation = outcomes[2]
    assert escalation is not None
    assert (escalation.rule, escalation.count, escalation.kind) == (
        "medium, thrice",
        3,
        "validation",
    )
    assert escalate(failure(InvalidInput("a bad date"))) is None  # not acknowledged yet
    assert Escalation.objects.count() == 1
    [message] = mail.outbox
    assert message.to == ["ops@example.com"]
    assert message.subject.endswith(f"[Backstop] medium validation in {PROBE} (3x)")
    assert "apps.resilience.taxonomy.InvalidInput: a bad date" in message.body


def test_dead_letters_older_than_the_window_or_below_the_severity_do_not_count(
    settings,
) -> None:
    only_rule(name="medium, thrice", min_severity="medium", count=3, window_seconds=300)
    settings.ESCALATION_CHANNELS = ["mail_admins"]
    settings.ADMINS = ADMINS
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    old = [failure(InvalidInput("stale")) for _ in range(2)]
    DeadLetter.objects.filter(pk__in=[d.pk for d in old]).update(
        last_failed_at=timezone.now() - timedelta(seconds=301)
    )

    assert escalate(failure(InvalidInput("stale"))) is None  # 1 in the window, not 3
    assert [escalate(failure(NotFound("gone"))) for _ in range(4)] == [None] * 4  # low
    assert not Escalation.objects.exists()
    assert mail.outbox == []


def test_an_escalation_mails_the_admins_even_when_another_channel_fails(settings) -> None:
    settings.ADMINS = ADMINS
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.ESCALATION_CHANNELS = ["webhook", "mail_admins", "log"]
    with controlled_server() as server:
        server.default = Reply(status=500)  # the webhook receiver is down
        settings.ESCALATION_WEBHOOK_URL = f"{server.url}/hooks/backstop"

        escalation = escalate(failure(RuntimeError("a bug in the handler")))

        assert escalation is not None
        letter = escalation.dead_letter
        assert escalation.rule == "critical at once"
        assert escalation.channels == ["webhook", "mail_admins", "log"]
        [received] = server.received
        assert received.path == "/hooks/backstop"
        assert json.loads(received.body) == {
            "subject": f"[Backstop] critical system in {PROBE} (1x)",
            "dead_letter": letter.pk,
            "kind": "system",
        }
    [message] = mail.outbox
    assert message.to == ["ops@example.com"]
    assert message.subject.endswith(f"[Backstop] critical system in {PROBE} (1x)")
    assert f"#{letter.pk} (critical at once)" in message.body


def test_two_dead_letters_of_a_group_escalating_at_the_same_time_escalate_it_once(
    settings,
) -> None:
    """Both escalations are held at their insert, after each has checked for the other.

    A lock on the escalation table lets reads through and holds writes, so both checks run
    before either escalation exists; only a check-and-insert that excludes the other one
    (a lock or a constraint) escalates the group once.
    """
    settings.ESCALATION_CHANNELS = ["log"]
    letters = [failure(RuntimeError("a bug in the handler")) for _ in range(2)]
    locked, release = threading.Event(), threading.Event()

    def hold_writes() -> None:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(f"LOCK TABLE {Escalation._meta.db_table} IN EXCLUSIVE MODE")
            locked.set()
            release.wait(timeout=20)

    with ThreadPoolExecutor(max_workers=3) as pool:
        holder = pool.submit(closing_connections(hold_writes))
        try:
            assert locked.wait(timeout=20)
            escalating = [pool.submit(closing_connections(escalate), d) for d in letters]
            wait_until(lambda: waiting_for_locks() == 2, message="both escalations to wait")
        finally:
            release.set()
    holder.result()
    outcomes = [f.result() for f in escalating]

    assert Escalation.objects.count() == 1
    assert sum(outcome is not None for outcome in outcomes) == 1


def waiting_for_locks() -> int:
    """How many sessions of the test database wait for a lock right now."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0]
