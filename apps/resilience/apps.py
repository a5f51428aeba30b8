from __future__ import annotations

from django.apps import AppConfig


class ResilienceConfig(AppConfig):
    name = "apps.resilience"
    label = "resilience"
    verbose_name = "Resilience"

    def ready(self) -> None:
        from apps.eventstore import relay
        from apps.resilience.services import ledger

        relay.record_deliveries_with(ledger.expect)
