"""Celery entry points of the runtime: the delivery task and the dead-letter sweep."""

from __future__ import annotations

from typing import Any

from celery import Task, shared_task
from django.conf import settings

from apps.resilience import runtime
from apps.resilience.consumer import keep_poison
from apps.resilience.services import dead_letters


class ResilientTask(Task):
    """The base of every handler task: late acks, requeue on worker loss, time limits."""

    acks_late = True
    reject_on_worker_lost = True
    max_retries = None  # the kind's retry policy decides, not a Celery-wide limit
    soft_time_limit = settings.RESILIENCE_HANDLER_SOFT_TIME_LIMIT
    time_limit = settings.RESILIENCE_HANDLER_TIME_LIMIT

    def on_failure(self, exc: Exception, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        """Keep a message that failed before the runtime could take it (e.g. malformed args)."""
        keep_poison("malformed task call", self.request, repr((args, kwargs)), exc)


@shared_task(bind=True, base=ResilientTask, name="backstop.deliver")
def deliver(
    self: ResilientTask, handler: str, event_id: str, dead_letter_id: int | None = None
) -> str:
    """Run ``handler`` on the event ``event_id``."""
    return runtime.run(self, handler, event_id, dead_letter_id)


@shared_task(name="backstop.dead_letters.sweep")
def sweep_dead_letters() -> int:
    """Retry the dead letters whose automatic retry time has come."""
    return dead_letters.sweep_due()
