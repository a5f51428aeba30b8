"""Celery entry points of the event store: delivery of one event to one handler, the sweep."""

from __future__ import annotations

import logging
import uuid

from celery import shared_task

from apps.eventstore import relay, store
from apps.eventstore.subscriptions import subscription

logger = logging.getLogger(__name__)


@shared_task(name="backstop.deliver")
def deliver(handler: str, event_id: str) -> None:
    """Run ``handler`` on the event ``event_id``."""
    recorded = store.load_event(uuid.UUID(event_id))
    subscription(handler).func(recorded)
    logger.info("delivered %s #%s to %s", recorded.type, recorded.position, handler)


@shared_task(name="backstop.outbox.sweep", ignore_result=True)
def sweep_outbox() -> int:
    """Publish outbox rows that the on-commit relay missed."""
    published = relay.sweep()
    if published:
        logger.info("outbox sweep published %d rows", published)
    return published
