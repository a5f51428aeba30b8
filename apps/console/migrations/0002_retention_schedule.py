"""Install the beat schedule that prunes rows past retention (RETENTION_SWEEP_SECONDS)."""

from __future__ import annotations

from django.db import migrations

from apps.eventstore.schedules import interval_task

install, uninstall = interval_task(
    name="Prune rows past retention",
    task="backstop.console.prune",
    seconds_setting="RETENTION_SWEEP_SECONDS",
    description="Deletes published outbox rows, old processed marks, succeeded deliveries, "
    "closed dead letters and expired idempotency keys, in bounded batches.",
)


class Migration(migrations.Migration):
    dependencies = [
        ("console", "0001_initial"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(install, uninstall)]
