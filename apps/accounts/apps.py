from __future__ import annotations

from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "apps.accounts"
    label = "accounts"
    verbose_name = "API tokens"

    def ready(self) -> None:
        from apps.accounts.authentication import connect_signals

        connect_signals()
