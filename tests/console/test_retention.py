"""Retention: rows at an end are pruned after their age, in bounded batches; nothing open,
pending, or still needed for exactly-once goes."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from datetime import timedelta
from io import StringIO
from pathlib import Path

import pytest
from celery import current_app
from django.core.cache import cache
from django.core.management import call_command
from django.utils import timezone

from apps.console import retention
from apps.eventstore.models import OutboxMessage
from apps.eventstore.registry import RecordedEvent
from apps.resilience.models import (
    Attempt,
    DeadLetter,
    DeadLetterAction,
    Delivery,
    Escalation,
    IdempotencyRecord,
    ParkedMessage,
    ProcessedMessage,
)
from apps.resilience.services import ledger
from tests.resilience.conftest import delivery, request_job, wait_for_status
from tests.resilience.handlers import effects
from tests.support.waiting import wait_until
from tests.support.worker import WorkerProcess

ROOT = Path(__file__).resolve().parents[2]


def _ago(**delta: float):
    return timezone.now() - timedelta(**delta)


def _mark(**age: float) -> ProcessedMessage:
    mark = ProcessedMessage.objects.create(handler="test.retention", event_id=uuid.uuid4())
    ProcessedMessage.objects.filter(pk=mark.pk).update(processed_at=_ago(**age))
    return mark


def _outbox(*, published: float | None, created: float = 60) -> OutboxMessage:
    recorded = request_job(f"retention-{uuid.uuid4().hex[:6]}")
    row = OutboxMessage.objects.get(event__event_id=recorded.event_id)
    published_at = _ago(days=published) if published is not None else None
    OutboxMessage.objects.filter(pk=row.pk).update(
        created_at=_ago(days=created), published_at=published_at
    )
    return row


def _delivery(status: str, **age: float) -> Delivery:
    row = Delivery.objects.create(handler="test.retention", event_id=uuid.uuid4(), status=status)
    Attempt.objects.create(
        delivery=row, number=1, kind="transient", exception_type="X", outcome="retry"
    )
    Delivery.objects.filter(pk=row.pk).update(updated_at=_ago(**age))
    return row


def _letter(status: str, *, resolved_days: float | None) -> DeadLetter:
    old = _ago(days=200)
    letter = DeadLetter.objects.create(
        handler="test.retention",
        event_id=uuid.uuid4(),
        kind="transient",
        severity="high",
        exception_type="X",
        fingerprint="retention",
        first_failed_at=old,
        last_failed_at=old,
        status=status,
        resolved_at=_ago(days=resolved_days) if resolved_days is not None else None,
    )
    DeadLetterAction.objects.create(dead_letter=letter, action="dead_lettered")
    return letter


def _escalate(letter: DeadLetter, *, acknowledged: bool) -> None:
    Escalation.objects.create(
        rule="r",
        dead_letter=letter,
        fingerprint=letter.fingerprint,
        kind=letter.kind,
        severity=letter.severity,
        count=1,
        acknowledged_at=timezone.now() if acknowledged else None,
    )


def _park(letter: DeadLetter, status: str) -> None:
    ParkedMessage.objects.create(
        handler=letter.handler,
        event_id=uuid.uuid4(),
        stream_id=uuid.uuid4(),
        version=2,
        blocked_by=letter,
        status=status,
        reason="behind a dead letter",
    )


def _key(**age: float) -> IdempotencyRecord:
    record = IdempotencyRecord.objects.create(
        user_id=1, scope="todos", key=uuid.uuid4().hex, request_hash="h"
    )
    IdempotencyRecord.objects.filter(pk=record.pk).update(created_at=_ago(**age))
    return record


def _exists(row) -> bool:
    return type(row).objects.filter(pk=row.pk).exists()


@pytest.fixture
def ages(settings):
    settings.OUTBOX_RETENTION_DAYS = 7
    settings.PROCESSED_MARK_RETENTION_DAYS = 30
    settings.DELIVERY_RETENTION_DAYS = 14
    settings.DEAD_LETTER_RETENTION_DAYS = 90
    return settings


@pytest.mark.django_db
@pytest.mark.usefixtures("ages")
def test_rows_past_their_age_are_pruned_and_young_or_open_ones_kept() -> None:
    gone = [
        _outbox(published=8),
        _mark(days=31),
        old_success := _delivery("succeeded", days=15),
        closed := _letter("resolved", resolved_days=91),
        acknowledged := _letter("discarded", resolved_days=100),
        _key(hours=25),
    ]
    _escalate(acknowledged, acknowledged=True)
    _park(closed, "released")
    kept = [
        _outbox(published=6),
        _outbox(published=None, created=60),  # never published: the relay still owes it
        _mark(days=29.9),  # younger than the limit: a late copy must still find it
        _delivery("succeeded", days=13),
        _delivery("dead_lettered", days=100),
        _delivery("retrying", days=100),
        _letter("pending", resolved_days=None),
        _letter("resolved", resolved_days=89),
        escalated := _letter("resolved", resolved_days=120),
        blocking := _letter("resolved", resolved_days=120),
        _key(hours=23),
    ]
    _escalate(escalated, acknowledged=False)  # nobody has acknowledged it yet
    _park(blocking, "pending")

    counts = retention.prune()

    assert counts == {
        "eventstore.OutboxMessage": 1,
        "resilience.ProcessedMessage": 1,
        "resilience.Delivery": 1,
        "resilience.Attempt": 1,
        "resilience.DeadLetter": 2,
        "resilience.DeadLetterAction": 2,
        "resilience.Escalation": 1,
        "resilience.ParkedMessage": 1,
        "resilience.IdempotencyRecord": 1,
    }
    assert [row for row in gone if _exists(row)] == []
    assert all(_exists(row) for row in kept)
    assert not Attempt.objects.filter(delivery_id=old_success.pk).exists()
    assert retention.prune() == {}  # a second run finds nothing more


@pytest.mark.django_db
@pytest.mark.usefixtures("ages")
def test_batches_and_the_per_run_cap_bound_what_one_run_deletes(settings) -> None:
    settings.RETENTION_BATCH_SIZE = 2
    settings.RETENTION_MAX_ROWS_PER_RUN = 5
    for _ in range(7):
        _mark(days=40)
    batches: list[tuple[str, int]] = []

    first = retention.prune(progress=lambda table, rows: batches.append((table, rows)))

    assert first == {"resilience.ProcessedMessage": 5}
    assert batches == [("resilience.ProcessedMessage", n) for n in (2, 2, 1)]
    assert ProcessedMessage.objects.count() == 2
    assert retention.prune() == {"resilience.ProcessedMessage": 2}


@pytest.mark.django_db
@pytest.mark.usefixtures("ages")
def test_the_commands_dry_run_reports_and_deletes_nothing() -> None:
    _mark(days=31)
    _delivery("succeeded", days=20)
    out = StringIO()

    call_command("prune", "--dry-run", stdout=out)

    assert "resilience.ProcessedMessage: would delete 1" in out.getvalue()
    assert "resilience.Delivery: would delete 1" in out.getvalue()
    assert "would delete 2 rows in all" in out.getvalue()
    assert ProcessedMessage.objects.count() == 1
    assert Delivery.objects.count() == 1
    assert Attempt.objects.count() == 1

    call_command("prune", stdout=out)
    assert "deleted 3 rows in all" in out.getvalue()  # with the delivery's attempt
    assert ProcessedMessage.objects.count() == Delivery.objects.count() == 0


def test_the_settings_know_the_ledgers_longest_backoff(settings) -> None:
    visibility = settings.CELERY_BROKER_TRANSPORT_OPTIONS.get("visibility_timeout", 0)
    longest = visibility + ledger.MAX_QUEUED_BACKOFF_SECONDS
    assert longest == settings.LONGEST_REDELIVERY_SECONDS


def test_a_processed_mark_retention_shorter_than_a_redelivery_stops_start_up(tmp_path) -> None:
    env = {
        **os.environ,
        "DEBUG": "1",
        "BACKSTOP_VAR_DIR": str(tmp_path / "var"),
        "CELERY_VISIBILITY_TIMEOUT": "86400",
        "PROCESSED_MARK_RETENTION_DAYS": "1",
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "PROCESSED_MARK_RETENTION_DAYS must be longer than" in result.stderr


def _redeliver(recorded: RecordedEvent) -> None:
    current_app.send_task(
        "backstop.deliver", args=("test.scripted", str(recorded.event_id)), queue="handlers"
    )


@pytest.mark.django_db(transaction=True)
def test_retention_on_a_worker_keeps_what_exactly_once_needs(worker: WorkerProcess) -> None:
    recorded = request_job("kept-once")
    wait_for_status("test.scripted", recorded, Delivery.Status.SUCCEEDED)
    assert effects("test.scripted", "kept-once") == 1
    # Long past every age the worker's settings give, except the processed mark's.
    Delivery.objects.filter(event_id=recorded.event_id).update(updated_at=_ago(days=400))
    OutboxMessage.objects.filter(event__event_id=recorded.event_id).update(
        published_at=_ago(days=400)
    )
    stale = _mark(days=400)

    current_app.send_task("backstop.console.prune", queue="maintenance")
    wait_until(lambda: not _exists(stale), message="the stale processed mark to be pruned")
    wait_until(lambda: delivery("test.scripted", recorded) is None, message="delivery pruned")
    assert not OutboxMessage.objects.filter(event__event_id=recorded.event_id).exists()
    assert ProcessedMessage.objects.filter(
        handler="test.scripted", event_id=recorded.event_id
    ).exists()

    # A late copy of the message: only the database's processed mark can stop it now.
    cache.delete(f"processed:test.scripted:{recorded.event_id}")
    _redeliver(recorded)

    wait_for_status("test.scripted", recorded, Delivery.Status.SUCCEEDED)
    assert effects("test.scripted", "kept-once") == 1
