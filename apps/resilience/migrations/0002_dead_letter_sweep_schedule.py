"""Install the beat schedule of the dead-letter sweep (interval: DEAD_LETTER_SWEEP_SECONDS)."""

from __future__ import annotations

from django.conf import settings
from django.db import migrations

TASK_NAME = "Dead-letter automatic retries"


def install(apps, schema_editor) -> None:
    interval_model = apps.get_model("django_celery_beat", "IntervalSchedule")
    task_model = apps.get_model("django_celery_beat", "PeriodicTask")
    seconds = max(1, round(settings.DEAD_LETTER_SWEEP_SECONDS))
    interval, _ = interval_model.objects.get_or_create(every=seconds, period="seconds")
    task_model.objects.update_or_create(
        name=TASK_NAME,
        defaults={
            "task": "backstop.dead_letters.sweep",
            "interval": interval,
            "queue": "maintenance",
            "expire_seconds": seconds * 2,
            "description": "Retries pending dead letters whose automatic retry time has come.",
        },
    )


def uninstall(apps, schema_editor) -> None:
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name=TASK_NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("resilience", "0001_initial"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(install, uninstall)]
