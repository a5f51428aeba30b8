"""Install the beat schedule of the outbox sweep (interval: OUTBOX_SWEEP_SECONDS)."""

from __future__ import annotations

from django.db import migrations

from apps.eventstore.schedules import interval_task

install, uninstall = interval_task(
    name="Outbox sweep",
    task="backstop.outbox.sweep",
    seconds_setting="OUTBOX_SWEEP_SECONDS",
    description="Publishes outbox rows the on-commit relay missed.",
)


class Migration(migrations.Migration):
    dependencies = [
        ("eventstore", "0002_append_only_triggers"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(install, uninstall)]
