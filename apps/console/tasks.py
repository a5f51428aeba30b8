"""Celery entry points of the console: retention, run by beat."""

from __future__ import annotations

import logging

from celery import shared_task

from apps.console import retention

logger = logging.getLogger(__name__)


@shared_task(name="backstop.console.prune")
def prune() -> dict[str, int]:
    """Prune what outlived its retention age; return and log the rows deleted per table."""
    counts = retention.prune()
    logger.info("retention pruned %s", counts or "nothing")
    return counts
