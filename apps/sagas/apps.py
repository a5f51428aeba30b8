from __future__ import annotations

from django.apps import AppConfig


class SagasConfig(AppConfig):
    name = "apps.sagas"
    label = "sagas"
    verbose_name = "Sagas"
