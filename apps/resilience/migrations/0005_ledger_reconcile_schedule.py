"""Install the beat schedule of the delivery reconciler (interval: LEDGER_RECONCILE_SECONDS)."""

from __future__ import annotations

from django.db import migrations

from apps.eventstore.schedules import interval_task

install, uninstall = interval_task(
    name="Delivery reconciler",
    task="backstop.deliveries.reconcile",
    seconds_setting="LEDGER_RECONCILE_SECONDS",
    description="Re-sends deliveries the broker lost; releases events parked behind closed"
    " dead letters.",
)


class Migration(migrations.Migration):
    dependencies = [
        ("resilience", "0004_ledger"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(install, uninstall)]
