from __future__ import annotations

from django.apps import AppConfig


class SagasConfig(AppConfig):
    name = "apps.sagas"
    label = "sagas"
    verbose_name = "Sagas"

    def ready(self) -> None:
        """Add the saga steps to the dead-letter console's correlation trace."""
        from apps.sagas import trace  # noqa: F401  (registers its source)
