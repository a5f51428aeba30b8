"""Create the operator account on first run, with a random password shown once."""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.core.validators import validate_email

from apps.console.operator import DEFAULT_OPERATOR_EMAIL, OPERATOR_USERNAME


class Command(BaseCommand):
    help = (
        "Create the operator superuser if it does not exist, printing its password once; "
        "give an existing one without an email address the given one."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--username", default=OPERATOR_USERNAME)
        parser.add_argument(
            "--email",
            # Read here, not in settings: only this command uses it (as createsuperuser
            # reads DJANGO_SUPERUSER_EMAIL).
            default=os.environ.get("OPERATOR_EMAIL") or DEFAULT_OPERATOR_EMAIL,
            help="where reminders and escalation mails reach the operator "
            f"(default: $OPERATOR_EMAIL, else {DEFAULT_OPERATOR_EMAIL})",
        )

    def handle(self, *args: Any, username: str, email: str, **options: Any) -> None:
        try:
            validate_email(email)
        except ValidationError as exc:
            raise CommandError(f"{email!r} is not an email address (user@example.com)") from exc
        users = get_user_model()
        hint = changepassword_hint(username)
        if users.objects.filter(username=username).exists():
            # An address the operator chose is kept; only a missing one is filled in.
            users.objects.filter(username=username, email="").update(email=email)
            self.stdout.write(
                f"Operator account '{username}' exists. Reset its password with: {hint}"
            )
            return
        password = secrets.token_urlsafe(12)
        users.objects.create_superuser(username=username, email=email, password=password)
        self.stdout.write(self.style.SUCCESS(f"Created operator account '{username}' ({email})."))
        self.stdout.write(f"  password: {password}")
        self.stdout.write(f"  (shown once; change it with: {hint})")


def changepassword_hint(username: str) -> str:
    """Return a command that resets ``username``'s password from the working directory: with
    this very Python (a bare ``python`` may not be the virtualenv's), and ``make
    changepassword`` too when that is what the checkout's Makefile runs."""
    python = Path(sys.executable)
    if python.is_relative_to(Path.cwd()):
        python = python.relative_to(Path.cwd())
    command = f"{python} manage.py changepassword {username}"
    if username == OPERATOR_USERNAME and Path("Makefile").is_file() and not python.is_absolute():
        return f"make changepassword (or {command})"
    return command
