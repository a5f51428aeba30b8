"""Beat schedules installed by data migrations: one periodic task on an interval setting."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.conf import settings

MigrationFunc = Callable[[Any, Any], None]


def interval_task(
    *, name: str, task: str, seconds_setting: str, description: str, queue: str = "maintenance"
) -> tuple[MigrationFunc, MigrationFunc]:
    """Return (install, uninstall) for ``migrations.RunPython`` of a django-celery-beat task.

    The interval comes from the setting ``seconds_setting``; a message nobody ran within
    a few intervals expires, since the next tick sends a fresh one.
    """

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

    return install, uninstall
