"""Celery entry points of the event store: the outbox sweep (delivery runs in apps.resilience)."""

from __future__ import annotations

import logging

from celery import shared_task

from apps.eventstore import following, rebuild_progress, relay

logger = logging.getLogger(__name__)


@shared_task(name="backstop.outbox.publish")
def publish_outbox(ids: list[int]) -> int:
    """Publish the given outbox rows (a large batch handed over by the on-commit relay)."""
    return relay.publish_pending(ids=ids, limit=len(ids))


@shared_task(name="backstop.outbox.sweep", ignore_result=True)
def sweep_outbox() -> int:
    """Publish outbox rows that the on-commit relay missed, and nudge every projection
    whose checkpoint is behind the log (its nudge lost, or its follower failed)."""
    try:
        published = relay.sweep()
    finally:  # a broker that fails the sweep may still take a nudge; try it either way
        if behind := following.nudge_lagging():
            logger.info("outbox sweep nudged projections behind the log: %s", ", ".join(behind))
    if published:
        logger.info("outbox sweep published %d rows", published)
    return published


@shared_task(
    name=following.FOLLOW_TASK,
    ignore_result=True,
    # The database unreachable: the batch rolled back; run it again a few times, then leave
    # it to the outbox sweep, which nudges every projection behind the log.
    autoretry_for=following.INFRASTRUCTURE,
    retry_backoff=True,
    retry_backoff_max=30,
    max_retries=5,
)
def follow_projection(name: str) -> int:
    """Apply what the log holds past projection ``name``'s checkpoint, in batches."""
    return following.follow(name)


@shared_task(name="backstop.projections.rebuild", ignore_result=True)
def rebuild_projection(name: str) -> int:
    """Rebuild projection ``name`` (the console's button), reporting progress as it goes."""
    report = rebuild_progress.run_rebuild(name)
    return report.events if report else 0
