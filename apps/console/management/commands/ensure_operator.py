"""Create the ``admin`` operator account on first run, with a random password shown once."""

from __future__ import annotations

import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create the operator account 'admin' if it does not exist, printing its password once."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--username", default="admin")

    def handle(self, *args: Any, username: str, **options: Any) -> None:
        users = get_user_model()
        if users.objects.filter(username=username).exists():
            self.stdout.write(
                f"Operator account '{username}' exists. "
                f"Reset its password with: python manage.py changepassword {username}"
            )
            return
        password = secrets.token_urlsafe(12)
        users.objects.create_superuser(username=username, email="", password=password)
        self.stdout.write(self.style.SUCCESS(f"Created operator account '{username}'."))
        self.stdout.write(f"  password: {password}")
        self.stdout.write(
            f"  (shown once; change it with: python manage.py changepassword {username})"
        )
