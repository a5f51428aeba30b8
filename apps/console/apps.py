from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.apps import apps as global_apps
from django.db.models.signals import post_migrate


class ConsoleConfig(AppConfig):
    name = "apps.console"
    label = "console"
    verbose_name = "Operations console"

    def ready(self) -> None:
        # After auth's own handler (auth is installed first): the permissions exist by then.
        post_migrate.connect(_ensure_groups, sender=self)


def _ensure_groups(sender: AppConfig, apps: Any = global_apps, **kwargs: Any) -> None:
    """Keep the "viewer" and "operator" groups complete after every ``migrate`` (and after
    a test database flush), with the permissions models added since the data migration."""
    from apps.console.groups import ensure_groups

    ensure_groups(apps)
