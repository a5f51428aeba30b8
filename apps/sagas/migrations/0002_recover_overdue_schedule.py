"""Install the beat schedule that recovers sagas past their deadline (SAGA_SWEEP_SECONDS)."""

from __future__ import annotations

from django.db import migrations

from apps.eventstore.schedules import interval_task

install, uninstall = interval_task(
    name="Recover overdue sagas",
    task="backstop.sagas.recover_overdue",
    seconds_setting="SAGA_SWEEP_SECONDS",
    description="Claims sagas past their deadline (SKIP LOCKED); compensates or asks again.",
)


class Migration(migrations.Migration):
    dependencies = [
        ("sagas", "0001_initial"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(install, uninstall)]
