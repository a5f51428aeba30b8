from __future__ import annotations

from importlib import import_module

from django.apps import AppConfig, apps
from django.conf import settings


class EventStoreConfig(AppConfig):
    name = "apps.eventstore"
    label = "eventstore"
    verbose_name = "Event store"

    def ready(self) -> None:
        """Import every app's ``events`` and ``handlers`` modules so the registries are full."""
        for config in apps.get_app_configs():
            if config.name.startswith("apps."):
                for module in ("events", "handlers"):
                    _import_if_present(f"{config.name}.{module}")
        for module in settings.EVENTSTORE_EXTRA_HANDLER_MODULES:
            import_module(module)


def _import_if_present(dotted: str) -> None:
    try:
        import_module(dotted)
    except ModuleNotFoundError as exc:
        if exc.name != dotted:  # the module exists but one of its imports is missing
            raise
