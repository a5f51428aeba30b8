"""Wait until a run is drained: nothing left to publish, deliver, run or fire."""

from __future__ import annotations

import time

import redis
from django.db import connection
from django.utils import timezone

from apps.eventstore import following, projections
from apps.eventstore.models import OutboxMessage
from apps.reminders.models import ReminderState
from apps.resilience.models import Delivery
from apps.sagas.models import SagaInstance
from tests.chaos import rabbitmq
from tests.chaos.processes import QUEUES

OPEN = [
    Delivery.Status.QUEUED,
    Delivery.Status.RUNNING,
    Delivery.Status.RETRYING,
    Delivery.Status.DEFERRED,
]


def pending(redis_url: str) -> dict[str, int]:
    """Return what is still left to do, by kind (all zero when drained)."""
    left = {
        "outbox": OutboxMessage.objects.filter(published_at=None).count(),
        "deliveries": Delivery.objects.filter(status__in=OPEN).count(),
        "projection_lag": sum(projections.lag(name) for name in following.followed()),
        "sagas": SagaInstance.objects.filter(state__in=SagaInstance.ACTIVE).count(),
        "reminders_due": ReminderState.objects.filter(
            status="pending", remind_at__lte=timezone.now()
        ).count(),
        "queued_messages": _waiting(redis_url),
    }
    connection.close()  # a fresh connection each poll: the database may have restarted
    return left


def _waiting(broker_url: str) -> int:
    """Return how many messages wait in Backstop's queues on the broker."""
    if broker_url.startswith("amqp"):
        return rabbitmq.waiting(broker_url, QUEUES.split(","))
    broker = redis.Redis.from_url(broker_url)
    return sum(int(broker.llen(q)) for q in QUEUES.split(","))


def drain(
    redis_url: str, deadline_seconds: float, *, future_reminders: bool = True
) -> tuple[float, dict[str, int]]:
    """Poll until nothing is pending (and, with ``future_reminders``, no reminder not yet
    due either); return the seconds it took and what was left (empty when drained before
    the deadline)."""
    started = time.monotonic()
    while True:
        left = {k: v for k, v in pending(redis_url).items() if v}
        future = future_reminders and ReminderState.objects.filter(status="pending").exists()
        if not left and not future:
            return round(time.monotonic() - started, 1), {}
        if time.monotonic() - started > deadline_seconds:
            return round(time.monotonic() - started, 1), left or {"reminders_not_due": 1}
        time.sleep(1)
