"""Beat schedules installed by data migrations: one periodic task on an interval setting.

The setting stays the interval's source of truth: ``sync_intervals`` (run by beat as it
starts, ``apps.console.beat``) puts each installed task back on its setting's interval, so
a changed ``*_SECONDS`` takes effect at the next beat start. An interval edited in
django-celery-beat's admin holds until then; a task not installed by ``interval_task`` is
never touched.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db import transaction

MigrationFunc = Callable[[Any, Any], None]
logger = logging.getLogger(__name__)
# Periodic task name -> the setting holding its interval in seconds, one entry per
# interval_task call (made as the migrations that install the tasks are imported).
MANAGED: dict[str, str] = {}
# Periodic task name -> the function that installs its row (for a database whose rows were
# flushed: the test suite's transactional tests).
INSTALLERS: dict[str, MigrationFunc] = {}


def interval_task(
    *, name: str, task: str, seconds_setting: str, description: str, queue: str = "maintenance"
) -> tuple[MigrationFunc, MigrationFunc]:
    """Return (install, uninstall) for ``migrations.RunPython`` of a django-celery-beat task.

    The interval comes from the setting ``seconds_setting``; a message nobody ran within
    a few intervals expires, since the next tick sends a fresh one.
    """
    MANAGED[name] = seconds_setting

    def install(apps: Any, schema_editor: Any) -> None:
        interval_model = apps.get_model("django_celery_beat", "IntervalSchedule")
        task_model = apps.get_model("django_celery_beat", "PeriodicTask")
        seconds = max(1, round(getattr(settings, seconds_setting)))
        interval, _ = interval_model.objects.get_or_create(every=seconds, period="seconds")
        task_model.objects.update_or_create(
            name=name,
            defaults={
                "task": task,
                "interval": interval,
                "queue": queue,
                "expire_seconds": seconds * 4,
                "description": description,
            },
        )

    def uninstall(apps: Any, schema_editor: Any) -> None:
        apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name=name).delete()

    INSTALLERS[name] = install
    return install, uninstall


def managed_intervals() -> dict[str, str]:
    """Return every Backstop-installed task's name and interval setting.

    Loading the migrations from disk (no database needed) runs their ``interval_task``
    calls, so a new schedule migration is known here without being listed anywhere else."""
    from django.db.migrations.loader import MigrationLoader

    MigrationLoader(None, ignore_no_migrations=True)
    return dict(MANAGED)


def sync_intervals() -> list[str]:
    """Put each installed task on the interval its setting gives; return (and log) what
    changed. A task whose row is missing (not migrated yet) or already right is left as it is.
    """
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    changes = []
    for name, setting in sorted(managed_intervals().items()):
        seconds = max(1, round(getattr(settings, setting)))
        with transaction.atomic():
            task = PeriodicTask.objects.select_for_update().filter(name=name).first()
            if task is None or _on_interval(task, seconds):
                continue
            before = str(task.interval or task.crontab or task.solar or task.clocked)
            task.interval, _ = IntervalSchedule.objects.get_or_create(
                every=seconds, period=IntervalSchedule.SECONDS
            )
            task.crontab = task.solar = task.clocked = None
            if task.expires is None:
                task.expire_seconds = seconds * 4
            task.save()  # through the model: it tells a running beat the schedule changed
        changes.append(f"{name}: {before} -> every {seconds} seconds (from {setting})")
        logger.info("periodic task %s", changes[-1])
    return changes


def _on_interval(task: Any, seconds: int) -> bool:
    interval = task.interval
    return (
        interval is not None
        and interval.every == seconds
        and interval.period == "seconds"
        and task.crontab_id is None
        and task.solar_id is None
        and task.clocked_id is None
    )
