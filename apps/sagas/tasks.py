"""Celery entry points of the sagas: the sweep of sagas past their deadline."""

from __future__ import annotations

from celery import shared_task

from apps.sagas import services


@shared_task(name="backstop.sagas.recover_overdue", ignore_result=True)
def recover_overdue() -> int:
    """Recover the sagas stuck past their deadline (resume or compensate them)."""
    return services.recover_overdue()
