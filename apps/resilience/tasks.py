"""Celery entry points of the runtime: the delivery task and the dead-letter sweep."""

from __future__ import annotations

import logging
from typing import Any

from billiard.exceptions import TimeLimitExceeded
from celery import Task, shared_task
from django.conf import settings

from apps.resilience import runtime
from apps.resilience.consumer import keep_poison
from apps.resilience.services import dead_letters, ledger, parking

logger = logging.getLogger(__name__)


class ResilientTask(Task):
    """The base of every handler task: late acks, requeue on worker loss, time limits."""

    acks_late = True
    reject_on_worker_lost = True
    max_retries = None  # the kind's retry policy decides, not a Celery-wide limit
    soft_time_limit = settings.RESILIENCE_HANDLER_SOFT_TIME_LIMIT
    time_limit = settings.RESILIENCE_HANDLER_TIME_LIMIT

    def on_failure(self, exc: Exception, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        """Count a run its hard time limit killed as a timeout of its (handler, event) pair;
        keep any other message that failed before the runtime could take it (e.g. malformed
        args) as a poison dead letter."""
        if isinstance(exc, TimeLimitExceeded) and _is_pair(args):
            runtime.timed_out(str(args[0]), str(args[1]), exc.args[0] if exc.args else None)
            return
        keep_poison("malformed task call", self.request, repr((args, kwargs)), exc)


def _is_pair(args: Any) -> bool:
    return isinstance(args, list | tuple) and len(args) >= 2


@shared_task(bind=True, base=ResilientTask, name="backstop.deliver")
def deliver(
    self: ResilientTask,
    handler: str,
    event_id: str,
    dead_letter_id: int | None = None,
    forgive: int = 0,
) -> str:
    """Run ``handler`` on the event ``event_id`` (``dead_letter_id``: a replay sent before
    the ledger kept replays; ``forgive``: the last run ended without its worker dying)."""
    return runtime.run(self, handler, event_id, dead_letter_id, forgive)


@shared_task(name="backstop.deliveries.reconcile", ignore_result=True)
def reconcile_deliveries() -> int:
    """Re-send the deliveries that made no progress in time; release streams parked behind
    closed dead letters."""
    resent = ledger.reconcile()
    released = parking.sweep()
    if released:
        logger.warning("released %d parked events behind closed dead letters", released)
    return len(resent)


@shared_task(name="backstop.dead_letters.sweep")
def sweep_dead_letters() -> int:
    """Retry the dead letters whose automatic retry time has come."""
    return dead_letters.sweep_due()
