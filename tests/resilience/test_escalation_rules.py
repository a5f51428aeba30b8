"""Escalation rules as rows: seeded from the settings, edited in the admin, each with its
own channels and an optional dead-letter depth threshold."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.core import mail
from django.test import Client
from django.utils import timezone

from apps.resilience.escalation_rules import EscalationRule, seed_rules
from apps.resilience.models import DeadLetter, Escalation
from apps.resilience.services.escalation import escalate, resolve
from tests.support.http import controlled_server

pytestmark = pytest.mark.django_db
ADMINS = [("Operators", "ops@example.com")]


@pytest.fixture
def mailbox(settings: Any) -> None:
    settings.ADMINS = ADMINS
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"


@pytest.fixture
def olivia() -> Any:
    return get_user_model().objects.create_superuser("olivia", "olivia@example.test", "pw-1")


def only_rule(**fields: Any) -> EscalationRule:
    """Deactivate the seeded rules and return a new rule with ``fields``."""
    EscalationRule.objects.update(active=False)
    defaults = {"min_severity": "low", "count": 1, "window_seconds": 3600}
    return EscalationRule.objects.create(**{**defaults, **fields})


def letter(status: str = "pending", severity: str = "medium") -> DeadLetter:
    """Write a dead letter of a group of its own."""
    now = timezone.now()
    return DeadLetter.objects.create(
        handler="test.rules",
        kind="validation",
        severity=severity,
        exception_type="InvalidInput",
        message="a bad date",
        fingerprint=uuid.uuid4().hex,
        first_failed_at=now,
        last_failed_at=now,
        status=status,
    )


def test_the_seeded_rules_are_the_settings_rules_in_order() -> None:
    seeded = list(
        EscalationRule.objects.values(
            "name", "min_severity", "count", "window_seconds", "active", "channels", "kinds"
        )
    )

    assert seeded == [
        {
            "name": rule["name"],
            "min_severity": rule["min_severity"],
            "count": rule["count"],
            "window_seconds": rule["window_seconds"],
            "active": True,
            "channels": [],  # the ESCALATION_CHANNELS setting
            "kinds": [],
        }
        for rule in django_settings.ESCALATION_RULES
    ]
    assert seed_rules(EscalationRule) == 0  # never twice


def test_a_depth_rule_fires_only_when_open_letters_exceed_its_threshold(mailbox: None) -> None:
    only_rule(name="a backlog", open_letters_above=3, channels=["mail_admins"])
    letter(status="resolved")
    letter(status="discarded")  # closed letters don't count

    quiet = [escalate(letter()) for _ in range(3)]
    fourth = escalate(letter())

    assert quiet == [None, None, None]
    assert fourth is not None
    assert (fourth.rule, fourth.channels) == ("a backlog", ["mail_admins"])
    assert escalate(letter()) is None  # once per window, whatever the group, until acknowledged
    [message] = mail.outbox
    assert message.to == ["ops@example.com"]


def test_an_inactive_rule_does_not_fire(mailbox: None) -> None:
    only_rule(name="switched off", active=False)

    assert escalate(letter(severity="critical")) is None
    assert not Escalation.objects.exists()
    assert mail.outbox == []


def test_a_rules_kinds_and_severity_decide_what_it_matches(mailbox: None) -> None:
    only_rule(name="only timeouts", kinds=["timeout"])
    assert escalate(letter()) is None

    only_rule(name="high and up", min_severity="high")
    assert escalate(letter(severity="medium")) is None
    assert escalate(letter(severity="high")) is not None


def test_a_rules_channels_decide_where_it_goes(mailbox: None) -> None:
    with controlled_server() as server:
        only_rule(name="to the pager", channels=["webhook"], webhook_url=f"{server.url}/page")
        paged = escalate(letter())

        only_rule(name="by mail", channels=["mail_admins"])
        mailed = escalate(letter())

        [received] = server.received
    assert paged is not None
    assert mailed is not None
    assert received.path == "/page"
    assert json.loads(received.body)["dead_letter"] == paged.dead_letter_id
    [message] = mail.outbox
    assert f"#{mailed.dead_letter_id} (by mail)" in message.body


def test_a_rule_is_edited_in_the_admin(olivia: Any) -> None:
    client = Client()
    client.force_login(olivia)

    response = client.post(
        "/admin/resilience/escalationrule/add/",
        {
            "name": "timeouts, a flood",
            "position": 9,
            "active": "on",
            "min_severity": "medium",
            "kinds": ["timeout", "transient"],
            "count": 20,
            "window_seconds": 600,
            "open_letters_above": 100,
            "channels": ["webhook"],
            "webhook_url": "",
        },
    )

    assert response.status_code == 200  # refused: the webhook channel needs a URL
    assert "the webhook channel needs a URL" in response.content.decode()
    response = client.post(
        "/admin/resilience/escalationrule/add/",
        {
            "name": "timeouts, a flood",
            "position": 9,
            "active": "on",
            "min_severity": "medium",
            "kinds": ["timeout", "transient"],
            "count": 20,
            "window_seconds": 600,
            "open_letters_above": 100,
            "channels": ["webhook", "log"],
            "webhook_url": "https://hooks.example.com/backstop",
        },
    )
    assert response.status_code == 302
    rule = EscalationRule.objects.get(name="timeouts, a flood")
    assert (rule.kinds, rule.channels, rule.open_letters_above) == (
        ["timeout", "transient"],
        ["webhook", "log"],
        100,
    )


def test_escalations_are_open_then_acknowledged_then_resolved(olivia: Any) -> None:
    only_rule(name="everything", channels=["log"])
    escalated = escalate(letter())
    assert escalated is not None
    assert escalated.status == "open"
    client = Client()
    client.force_login(olivia)
    page = "/admin/resilience/escalation/"

    assert client.get(page, {"status": "open"}).context["cl"].result_count == 1
    client.post(page, {"action": "resolve", "_selected_action": [escalated.pk]})

    escalated.refresh_from_db()
    assert (escalated.status, escalated.resolved_by, escalated.acknowledged_by) == (
        "resolved",
        olivia,
        olivia,
    )
    assert client.get(page, {"status": "open"}).context["cl"].result_count == 0
    assert client.get(page, {"status": "resolved"}).context["cl"].result_count == 1
    assert resolve(escalated.pk, actor=None).resolved_by == olivia  # once
