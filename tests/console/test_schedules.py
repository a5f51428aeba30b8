"""Settings are the periodic tasks' source of truth: beat puts each task Backstop installed
back on its setting's interval as it starts, and leaves every other task alone."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from celery import current_app
from django.apps import apps as django_apps
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask
from django_celery_beat.schedulers import DatabaseScheduler

from apps.console.beat import HeartbeatScheduler
from apps.eventstore.schedules import INSTALLERS, managed_intervals, sync_intervals

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def installed() -> None:
    """Install the managed rows as their migrations do: a transactional test that ran
    earlier in this process flushed every table, the migrations' rows included."""
    for name in managed_intervals():
        INSTALLERS[name](django_apps, None)


def interval_of(name: str) -> tuple[int, str]:
    task = PeriodicTask.objects.select_related("interval").get(name=name)
    assert task.interval is not None
    return task.interval.every, task.interval.period


def test_every_installed_schedule_is_managed_by_its_setting() -> None:
    managed = managed_intervals()

    assert managed["Outbox sweep"] == "OUTBOX_SWEEP_SECONDS"
    assert managed["Delivery reconciler"] == "LEDGER_RECONCILE_SECONDS"
    assert set(managed) <= set(PeriodicTask.objects.values_list("name", flat=True))


def test_a_changed_setting_changes_the_tasks_interval(
    settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    settings.OUTBOX_SWEEP_SECONDS = 7.2

    with caplog.at_level(logging.INFO, logger="apps.eventstore.schedules"):
        changes = sync_intervals()

    assert interval_of("Outbox sweep") == (7, "seconds")
    assert PeriodicTask.objects.get(name="Outbox sweep").expire_seconds == 28
    assert len(changes) == 1
    assert "Outbox sweep" in changes[0]
    assert "OUTBOX_SWEEP_SECONDS" in changes[0]
    assert any("Outbox sweep" in record.getMessage() for record in caplog.records)
    assert sync_intervals() == []  # already right: nothing to do the second time


def test_a_task_not_installed_by_backstop_is_untouched(settings: Any) -> None:
    every_42, _ = IntervalSchedule.objects.get_or_create(every=42, period="seconds")
    theirs = PeriodicTask.objects.create(
        name="Someone's report", task="x.report", interval=every_42
    )
    settings.OUTBOX_SWEEP_SECONDS = 42.0

    sync_intervals()

    theirs.refresh_from_db()
    assert (theirs.interval_id, theirs.task, theirs.expire_seconds) == (
        every_42.pk,
        "x.report",
        None,
    )


def test_a_schedule_edited_in_the_admin_is_put_back_on_its_setting(
    settings: Any,
) -> None:
    nightly = CrontabSchedule.objects.create(minute="0", hour="3")
    task = PeriodicTask.objects.get(name="Dead-letter automatic retries")
    task.interval, task.crontab = None, nightly
    task.save()
    settings.DEAD_LETTER_SWEEP_SECONDS = 90.0

    sync_intervals()

    task.refresh_from_db()
    assert task.crontab is None
    assert interval_of("Dead-letter automatic retries") == (90, "seconds")


def test_beat_syncs_the_intervals_before_it_loads_the_schedule(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.SAGA_SWEEP_SECONDS = 11.0
    loaded_with = []
    # The database scheduler's own loading closes the database connection (not in a test's
    # transaction): record what it would have loaded instead.
    monkeypatch.setattr(
        DatabaseScheduler,
        "setup_schedule",
        lambda self: loaded_with.append(interval_of("Recover overdue sagas")),
    )

    HeartbeatScheduler(app=current_app, lazy=True).setup_schedule()

    assert loaded_with == [(11, "seconds")]
