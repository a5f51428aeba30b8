"""Escalation: rules by severity, kind, count-in-window and backlog depth decide who hears
of dead letters, and by which channels. The rules are ``EscalationRule`` rows (the admin
edits them); the ``ESCALATION_RULES`` setting only seeds them."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

import httpx
import sentry_sdk
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import send_mail
from django.db import transaction
from django.utils import timezone

from apps.eventstore.store import lock_for_transaction
from apps.resilience.escalation_rules import EscalationRule
from apps.resilience.models import DeadLetter, Escalation
from apps.resilience.taxonomy import Severity

logger = logging.getLogger(__name__)


def report_to_sentry(exc: BaseException, letter: DeadLetter) -> None:
    """Tell Sentry (when configured) of a final failure, grouped like the console groups it."""
    with sentry_sdk.new_scope() as scope:
        scope.fingerprint = ["backstop-dead-letter", letter.fingerprint]
        scope.set_tag("handler", letter.handler)
        scope.set_tag("error_kind", letter.kind)
        scope.set_context("dead_letter", {"id": letter.pk, "event_id": str(letter.event_id)})
        sentry_sdk.capture_exception(exc)


def escalate(letter: DeadLetter) -> Escalation | None:
    """Apply the first matching active ``EscalationRule`` to a new dead letter.

    A group (fingerprint) is escalated once per rule and window until acknowledged; the
    check and the insert run under a lock of the group, so concurrent dead letters of one
    group can't both escalate it. A rule with a depth threshold escalates once per window
    whatever the group: it is about the whole backlog, and holds a lock of its own.
    """
    with transaction.atomic():
        lock_for_transaction(f"escalate:{letter.fingerprint}")
        found = _first_matching_rule(letter)
    if found is None:
        return None
    escalation, rule = found
    _notify(escalation, letter, rule.target_url)
    return escalation


def _first_matching_rule(letter: DeadLetter) -> tuple[Escalation, EscalationRule] | None:
    now = timezone.now()
    for rule in EscalationRule.objects.filter(active=True):
        if not _applies(rule, letter):
            continue
        since = now - timedelta(seconds=rule.window_seconds)
        count = DeadLetter.objects.filter(
            fingerprint=letter.fingerprint, last_failed_at__gte=since
        ).count()
        if count < rule.count or not _deep_enough(rule):
            continue
        if _cooling_down(rule, letter, since):
            return None
        escalation = Escalation.objects.create(
            rule=rule.name,
            dead_letter=letter,
            fingerprint=letter.fingerprint,
            kind=letter.kind,
            severity=letter.severity,
            count=count,
            channels=rule.effective_channels,
        )
        return escalation, rule
    return None


def _applies(rule: EscalationRule, letter: DeadLetter) -> bool:
    if Severity(letter.severity).rank < Severity(rule.min_severity).rank:
        return False
    return not rule.kinds or letter.kind in rule.kinds


def _deep_enough(rule: EscalationRule) -> bool:
    """Return whether more dead letters are open than the rule's depth threshold (if any)."""
    if rule.open_letters_above is None:
        return True
    return DeadLetter.objects.filter(status__in=DeadLetter.OPEN).count() > rule.open_letters_above


def _cooling_down(rule: EscalationRule, letter: DeadLetter, since: datetime) -> bool:
    """Return whether the rule escalated this group (any group, for a depth rule) within
    the window and nobody has acknowledged it yet."""
    recent = Escalation.objects.filter(
        rule=rule.name, acknowledged_at__isnull=True, created_at__gte=since
    )
    if rule.open_letters_above is None:
        return recent.filter(fingerprint=letter.fingerprint).exists()
    lock_for_transaction(f"escalate-rule:{rule.pk}")
    return recent.exists()


def _notify(escalation: Escalation, letter: DeadLetter, webhook_url: str) -> None:
    subject = (
        f"[Backstop] {letter.severity} {letter.kind} in {letter.handler} ({escalation.count}x)"
    )
    body = f"{letter.exception_type}: {letter.message}\n\n#{letter.pk} ({escalation.rule})."
    for channel in escalation.channels:
        try:
            _send(channel, subject, body, letter, webhook_url)
        except Exception:  # one channel failing must not hide the escalation from the others
            logger.exception("escalation channel %s failed", channel)


def _send(channel: str, subject: str, body: str, letter: DeadLetter, webhook_url: str) -> None:
    if channel == "log":
        logger.error("ESCALATION %s — %s", subject, body)
    elif channel == "mail_admins" and (recipients := operators_emails()):
        prefixed = f"{settings.EMAIL_SUBJECT_PREFIX}{subject}"
        send_mail(prefixed, body, settings.SERVER_EMAIL, recipients, fail_silently=False)
    elif channel == "webhook" and webhook_url:
        payload = {"subject": subject, "dead_letter": letter.pk, "kind": letter.kind}
        httpx.post(webhook_url, json=payload, timeout=5).raise_for_status()
    # "sentry": every dead letter already went to Sentry when it was written.


def operators_emails() -> list[str]:
    """Return who hears of escalations by email: ``ADMINS``, then every active superuser
    with an address (the operator ``make run`` creates), each once."""
    emails = [email for _name, email in settings.ADMINS]
    emails += (
        get_user_model()
        .objects.filter(is_superuser=True, is_active=True)
        .exclude(email="")
        .order_by("pk")
        .values_list("email", flat=True)
    )
    return list(dict.fromkeys(emails))


def acknowledge(escalation_id: int, *, actor: Any, notes: str = "") -> Escalation:
    """Record that an operator has seen the escalation."""
    escalation = Escalation.objects.get(pk=escalation_id)
    if escalation.acknowledged_at is None:
        escalation.acknowledged_at = timezone.now()
        escalation.acknowledged_by = actor
        escalation.notes = notes
        escalation.save(update_fields=["acknowledged_at", "acknowledged_by", "notes"])
    return escalation


def resolve(escalation_id: int, *, actor: Any, notes: str = "") -> Escalation:
    """Record that the escalation's cause is dealt with (acknowledging it too, if need be)."""
    escalation = Escalation.objects.get(pk=escalation_id)
    if escalation.resolved_at is None:
        now = timezone.now()
        escalation.acknowledged_at = escalation.acknowledged_at or now
        escalation.acknowledged_by = escalation.acknowledged_by or actor
        escalation.resolved_at, escalation.resolved_by = now, actor
        escalation.notes = "\n".join(filter(None, [escalation.notes, notes]))
        escalation.save(
            update_fields=[
                "acknowledged_at",
                "acknowledged_by",
                "resolved_at",
                "resolved_by",
                "notes",
            ]
        )
    return escalation
