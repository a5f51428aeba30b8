"""Install the beat schedule of the dead-letter sweep (interval: DEAD_LETTER_SWEEP_SECONDS)."""

from __future__ import annotations

from django.db import migrations

from apps.eventstore.schedules import interval_task

install, uninstall = interval_task(
    name="Dead-letter automatic retries",
    task="backstop.dead_letters.sweep",
    seconds_setting="DEAD_LETTER_SWEEP_SECONDS",
    description="Retries pending dead letters whose automatic retry time has come.",
)


class Migration(migrations.Migration):
    dependencies = [
        ("resilience", "0001_initial"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(install, uninstall)]
