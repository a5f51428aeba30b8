"""The delivery ledger: a ``queued`` state, when the reconciler looks again, its re-sends,
and the dead letter a delivery replays."""

from __future__ import annotations

import django.db.models.deletion
from django.db import migrations, models

OPEN = ["queued", "running", "retrying", "deferred"]


class Migration(migrations.Migration):
    dependencies = [("resilience", "0003_idempotency")]

    operations = [
        migrations.AlterField(
            model_name="delivery",
            name="status",
            field=models.CharField(
                choices=[
                    ("queued", "Queued"),
                    ("running", "Running"),
                    ("retrying", "Retrying"),
                    ("deferred", "Deferred"),
                    ("succeeded", "Succeeded"),
                    ("parked", "Parked"),
                    ("dead_lettered", "Dead Lettered"),
                ],
                default="queued",
                max_length=20,
            ),
        ),
        migrations.AddField(
            model_name="delivery",
            name="reconcile_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="delivery",
            name="resends",
            field=models.PositiveIntegerField(
                default=0, help_text="messages the reconciler re-sent"
            ),
        ),
        migrations.AddField(
            model_name="delivery",
            name="last_resent_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="delivery",
            name="replay_of",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to="resilience.deadletter",
            ),
        ),
        migrations.AddIndex(
            model_name="delivery",
            index=models.Index(
                condition=models.Q(status__in=OPEN),
                fields=["reconcile_at"],
                name="delivery_reconcile_idx",
            ),
        ),
        migrations.AddIndex(
            model_name="delivery",
            index=models.Index(
                condition=models.Q(status__in=OPEN),
                fields=["status", "updated_at"],
                name="delivery_open_idx",
            ),
        ),
        # Pairs the runtime left waiting before the ledger existed are due at their next
        # attempt (or now), so the reconciler takes them over.
        migrations.RunSQL(
            "UPDATE resilience_delivery SET reconcile_at = COALESCE(next_attempt_at, updated_at)"
            " WHERE status IN ('running', 'retrying', 'deferred')",
            migrations.RunSQL.noop,
        ),
    ]
