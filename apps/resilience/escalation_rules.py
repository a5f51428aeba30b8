"""Escalation rules: who hears of which dead letters, edited in the admin.

``apps.resilience.services.escalation`` applies the active rules in ``position`` order to
each new dead letter; the first that matches escalates it. The ``ESCALATION_RULES``
setting is only the seed: a data migration writes it as rows, and so does ``post_migrate``
while the table is empty (a fresh database, or one a test run flushed). To silence
escalation, deactivate the rules: a table emptied by hand is seeded again at the next
``migrate``.
"""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.apps import apps as global_apps
from django.apps.registry import Apps
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models.signals import post_migrate

from apps.resilience.taxonomy import ErrorKind, Severity


class Channel(models.TextChoices):
    """The channels ``services.escalation`` knows (as in ``ESCALATION_CHANNELS``)."""

    LOG = "log"
    MAIL_ADMINS = "mail_admins", "admin email"
    SENTRY = "sentry"
    WEBHOOK = "webhook"


class EscalationRule(models.Model):
    """Escalate a failure group once ``count`` dead letters of at least ``min_severity``
    (and of ``kinds``, if any) failed within ``window_seconds`` — and, with a depth
    threshold, only while more than that many dead letters are open."""

    name = models.CharField(max_length=100, unique=True)
    position = models.PositiveIntegerField(default=0, help_text="rules are tried in this order")
    active = models.BooleanField(default=True)
    min_severity = models.CharField(max_length=10, choices=Severity.choices)
    kinds = models.JSONField(default=list, blank=True, help_text="error kinds; none: every kind")
    count = models.PositiveIntegerField(default=1, help_text="dead letters of a group")
    window_seconds = models.PositiveIntegerField(
        default=3600, help_text="the window counted; also the cool-down until acknowledged"
    )
    open_letters_above = models.PositiveIntegerField(
        null=True, blank=True, help_text="escalate only while more dead letters are open"
    )
    channels = models.JSONField(
        default=list, blank=True, help_text="none: the ESCALATION_CHANNELS setting"
    )
    webhook_url = models.URLField(blank=True, help_text="none: ESCALATION_WEBHOOK_URL")

    class Meta:
        ordering = ["position", "id"]

    def __str__(self) -> str:
        return f"escalation rule {self.name}"

    def clean(self) -> None:
        unknown = {*self.kinds} - {*ErrorKind.values} | {*self.channels} - {*Channel.values}
        if unknown:
            raise ValidationError(f"unknown kinds or channels: {', '.join(sorted(unknown))}")
        if Channel.WEBHOOK in self.channels and not self.target_url:
            raise ValidationError({"webhook_url": "the webhook channel needs a URL"})

    @property
    def effective_channels(self) -> list[str]:
        return list(self.channels or settings.ESCALATION_CHANNELS)

    @property
    def target_url(self) -> str:
        return str(self.webhook_url or settings.ESCALATION_WEBHOOK_URL)


def seed_rules(rule_model: Any) -> int:
    """Write the ``ESCALATION_RULES`` setting as rules unless some exist; return how many.

    ``rule_model`` is the model class: a migration's historical one, or ``EscalationRule``.
    """
    if rule_model.objects.exists():
        return 0
    rules = [
        rule_model(
            name=rule["name"],
            position=position,
            min_severity=rule["min_severity"],
            kinds=list(rule.get("kinds") or []),
            count=rule["count"],
            window_seconds=rule["window_seconds"],
            open_letters_above=rule.get("open_letters_above"),
        )
        for position, rule in enumerate(settings.ESCALATION_RULES)
    ]
    rule_model.objects.bulk_create(rules)
    return len(rules)


def _seed_after_migrate(sender: AppConfig, apps: Apps = global_apps, **kwargs: Any) -> None:
    """Seed an empty rules table after ``migrate`` (and after a flush, which emits it too,
    without the migration state's ``apps``)."""
    if sender.label != "resilience" or kwargs.get("using", "default") != "default":
        return
    try:
        rule_model = apps.get_model("resilience", "EscalationRule")
    except LookupError:  # migrated to a state before the rules existed
        return
    seed_rules(rule_model)


post_migrate.connect(_seed_after_migrate, dispatch_uid="resilience.seed_escalation_rules")
