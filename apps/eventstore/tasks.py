"""Celery entry points of the event store: the outbox sweep (delivery runs in apps.resilience)."""

from __future__ import annotations

import logging

from celery import shared_task

from apps.eventstore import rebuild_progress, relay

logger = logging.getLogger(__name__)


@shared_task(name="backstop.outbox.publish")
def publish_outbox(ids: list[int]) -> int:
    """Publish the given outbox rows (a large batch handed over by the on-commit relay)."""
    return relay.publish_pending(ids=ids, limit=len(ids))


@shared_task(name="backstop.outbox.sweep", ignore_result=True)
def sweep_outbox() -> int:
    """Publish outbox rows that the on-commit relay missed."""
    published = relay.sweep()
    if published:
        logger.info("outbox sweep published %d rows", published)
    return published


@shared_task(name="backstop.projections.rebuild", ignore_result=True)
def rebuild_projection(name: str) -> int:
    """Rebuild projection ``name`` (the console's button), reporting progress as it goes."""
    report = rebuild_progress.run_rebuild(name)
    return report.events if report else 0
