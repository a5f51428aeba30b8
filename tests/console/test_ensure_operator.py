"""ensure_operator creates the operator once, with an email address that reminders and
escalation mails reach, and prints a password reset command that works from the checkout."""

from __future__ import annotations

import io
import re

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

pytestmark = pytest.mark.django_db


def _run(*args: str) -> str:
    out = io.StringIO()
    call_command("ensure_operator", *args, stdout=out)
    return out.getvalue()


def test_the_first_run_creates_a_superuser_with_the_default_email_and_a_printed_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OPERATOR_EMAIL", raising=False)

    out = _run()

    [password] = re.findall(r"password: (\S+)", out)
    operator = get_user_model().objects.get(username="admin")
    assert operator.is_superuser
    assert operator.is_staff
    assert operator.email == "admin@localhost"
    assert operator.check_password(password)
    # From the checkout's venv: a command that works without activating it.
    assert (
        "change it with: make changepassword (or .venv/bin/python manage.py changepassword admin)"
        in out
    )


def test_the_email_comes_from_operator_email_or_the_option(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPERATOR_EMAIL", "ops@example.test")
    _run()
    _run("--username", "second", "--email", "second@example.test")

    emails = dict(get_user_model().objects.values_list("username", "email"))
    assert emails == {"admin": "ops@example.test", "second": "second@example.test"}


def test_a_rerun_keeps_the_password_and_fills_in_only_a_missing_email() -> None:
    users = get_user_model()
    users.objects.create_superuser("admin", "", "chosen-pw")
    users.objects.create_superuser("kept", "mine@example.test", "chosen-pw")

    out = _run("--email", "ops@example.test")
    _run("--username", "kept", "--email", "ops@example.test")

    admin, kept = users.objects.get(username="admin"), users.objects.get(username="kept")
    assert admin.check_password("chosen-pw")
    assert admin.email == "ops@example.test"
    assert kept.check_password("chosen-pw")
    assert kept.email == "mine@example.test"
    assert "password:" not in out
    assert "exists. Reset its password with: make changepassword" in out
    assert ": python manage.py" not in out


def test_an_address_that_is_not_one_is_refused() -> None:
    with pytest.raises(CommandError, match="not an email address"):
        _run("--email", "nobody")
    assert not get_user_model().objects.exists()
