# Escalation rules as rows (seeded from the ESCALATION_RULES setting) and a resolved state.

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


def seed(apps, schema_editor):
    from apps.resilience.escalation_rules import seed_rules

    seed_rules(apps.get_model("resilience", "EscalationRule"))


class Migration(migrations.Migration):
    dependencies = [
        ("resilience", "0007_triage_and_payload_permissions"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="escalation",
            name="resolved_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="escalation",
            name="resolved_by",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.CreateModel(
            name="EscalationRule",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("name", models.CharField(max_length=100, unique=True)),
                (
                    "position",
                    models.PositiveIntegerField(
                        default=0, help_text="rules are tried in this order"
                    ),
                ),
                ("active", models.BooleanField(default=True)),
                (
                    "min_severity",
                    models.CharField(
                        choices=[
                            ("low", "Low"),
                            ("medium", "Medium"),
                            ("high", "High"),
                            ("critical", "Critical"),
                        ],
                        max_length=10,
                    ),
                ),
                (
                    "kinds",
                    models.JSONField(
                        blank=True, default=list, help_text="error kinds; none: every kind"
                    ),
                ),
                (
                    "count",
                    models.PositiveIntegerField(default=1, help_text="dead letters of a group"),
                ),
                (
                    "window_seconds",
                    models.PositiveIntegerField(
                        default=3600,
                        help_text="the window counted; also the cool-down until acknowledged",
                    ),
                ),
                (
                    "open_letters_above",
                    models.PositiveIntegerField(
                        blank=True,
                        help_text="escalate only while more dead letters are open",
                        null=True,
                    ),
                ),
                (
                    "channels",
                    models.JSONField(
                        blank=True, default=list, help_text="none: the ESCALATION_CHANNELS setting"
                    ),
                ),
                (
                    "webhook_url",
                    models.URLField(blank=True, help_text="none: ESCALATION_WEBHOOK_URL"),
                ),
            ],
            options={"ordering": ["position", "id"]},
        ),
        migrations.RunPython(seed, migrations.RunPython.noop),
    ]
