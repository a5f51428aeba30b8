"""Install the beat schedule that fires due reminders (interval: REMINDER_SWEEP_SECONDS)."""

from __future__ import annotations

from django.db import migrations

from apps.eventstore.schedules import interval_task

install, uninstall = interval_task(
    name="Fire due reminders",
    task="backstop.reminders.fire_due",
    seconds_setting="REMINDER_SWEEP_SECONDS",
    description="Claims due reminders (SKIP LOCKED) and records reminder.triggered, once each.",
)


class Migration(migrations.Migration):
    dependencies = [
        ("reminders", "0001_initial"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(install, uninstall)]
