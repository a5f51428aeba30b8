"""Install the beat schedule of the outbox sweep (interval: OUTBOX_SWEEP_SECONDS)."""

from __future__ import annotations

from django.conf import settings
from django.db import migrations

TASK_NAME = "Outbox sweep"


def install(apps, schema_editor) -> None:
    interval_model = apps.get_model("django_celery_beat", "IntervalSchedule")
    task_model = apps.get_model("django_celery_beat", "PeriodicTask")
    seconds = max(1, round(settings.OUTBOX_SWEEP_SECONDS))
    interval, _ = interval_model.objects.get_or_create(every=seconds, period="seconds")
    task_model.objects.update_or_create(
        name=TASK_NAME,
        defaults={
            "task": "backstop.outbox.sweep",
            "interval": interval,
            "queue": "maintenance",
            # A sweep nobody ran in time is useless: the next tick sends a fresh one.
            "expire_seconds": seconds * 4,
            "description": "Publishes outbox rows the on-commit relay missed.",
        },
    )


def uninstall(apps, schema_editor) -> None:
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name=TASK_NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("eventstore", "0002_append_only_triggers"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(install, uninstall)]
