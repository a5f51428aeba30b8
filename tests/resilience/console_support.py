"""Personas and letters of the dead-letter console tests.

Olivia (``operator_client``) is a superuser and may do everything; Vic is staff with only
the view permissions: he sees every page, no button, and gets 403 on every action.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client
from django.utils import timezone

from apps.resilience.models import DeadLetter


def viewer_client() -> Client:
    user = get_user_model().objects.create_user("vic", password="pw-vic-1", is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(codename__in=["view_deadletter", "view_triage"])
    )
    client = Client()
    client.force_login(user)
    return client


def letter(
    fingerprint: str = "group-a", *, at: datetime | None = None, **fields: object
) -> DeadLetter:
    """Write a pending dead letter of ``fingerprint`` (no stored event unless given)."""
    when = at or timezone.now()
    values: dict[str, object] = {
        "handler": "test.scripted",
        "event_id": uuid.uuid4(),
        "kind": "transient",
        "severity": "medium",
        "exception_type": "TransientError",
        "message": "connection reset",
        "fingerprint": fingerprint,
        "first_failed_at": when,
        "last_failed_at": when,
    }
    return DeadLetter.objects.create(**{**values, **fields})
