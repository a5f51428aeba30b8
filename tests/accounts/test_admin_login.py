"""Guessing an admin password: django-axes locks the username out from that address (429).

Olivia is the operator. Her password guessed wrong too often from one address locks her
username out of the console from that address only, for the cool-off, right password or not.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from axes.models import AccessAttempt
from django.contrib.auth import get_user_model
from django.db.models import F
from django.test import Client

from tests.accounts.conftest import log_in
from tests.support.api import Api

pytestmark = pytest.mark.django_db

LOGIN = "/admin/login/"
ATTACKER = "10.0.0.66"


@pytest.fixture
def olivia() -> Any:
    return get_user_model().objects.create_superuser("olivia", "olivia@example.test", "pw-olivia-1")


def admin_login(username: str, password: str, address: str = ATTACKER) -> Any:
    """Return the admin login's answer to ``username`` and ``password`` from ``address``."""
    client = Client(REMOTE_ADDR=address)
    return client.post(LOGIN, {"username": username, "password": password, "next": "/admin/"})


def test_guessing_locks_the_username_out_from_that_address(olivia: Any, settings: Any) -> None:
    settings.AXES_FAILURE_LIMIT = 3

    guesses = [admin_login("olivia", f"guess-{n}").status_code for n in range(3)]

    assert guesses == [200, 200, 429]  # the form again, then locked out at the limit
    assert admin_login("olivia", "pw-olivia-1").status_code == 429
    assert admin_login("olivia", "pw-olivia-1", address="10.0.0.5").status_code == 302


def test_the_lockout_is_per_username_and_address(olivia: Any, alice: Api, settings: Any) -> None:
    settings.AXES_FAILURE_LIMIT = 2
    alice.user.is_staff = True
    alice.user.save()

    for n in range(2):
        admin_login("olivia", f"guess-{n}")

    assert admin_login("alice", "pw-alice-1").status_code == 302  # same address, other user


def test_the_lockout_ends_after_the_cool_off(olivia: Any, settings: Any) -> None:
    settings.AXES_FAILURE_LIMIT = 2
    settings.AXES_COOLOFF_TIME = timedelta(minutes=15)
    for n in range(2):
        admin_login("olivia", f"guess-{n}")
    assert admin_login("olivia", "pw-olivia-1").status_code == 429

    # The clock is the edge: fifteen minutes pass for the recorded attempts.
    AccessAttempt.objects.update(attempt_time=F("attempt_time") - timedelta(minutes=16))

    assert admin_login("olivia", "pw-olivia-1").status_code == 302


def test_guessing_at_the_token_endpoint_counts_toward_the_admin_lockout(
    olivia: Any, settings: Any
) -> None:
    settings.AXES_FAILURE_LIMIT = 3

    for n in range(3):
        assert log_in("olivia", f"guess-{n}", address=ATTACKER).status_code == 400

    assert admin_login("olivia", "pw-olivia-1").status_code == 429
