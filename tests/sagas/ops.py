"""Saga rows written with the ORM, a trip stopped mid-way, and the staff persona, for the
ops API and admin tests.

Olivia is an operator (staff); Alice and Bob (tests/support/api.py) are ordinary users,
who may not even learn whether a saga exists.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from django.conf import settings
from django.contrib.auth.models import Group

from apps.eventstore.relay import DELIVER_TASK
from apps.resilience import runtime
from apps.sagas.models import SagaInstance, SagaStep
from tests.resilience.handlers import script
from tests.sagas.definitions import NAME, request_trip
from tests.support.api import Api
from tests.support.broker import take_messages
from tests.support.inline import QUEUES
from tests.support.waiting import wait_until


def saga_row(*, created_at: datetime | None = None, **fields: Any) -> SagaInstance:
    """Write a saga row as the orchestrator would have (a test-trip, running, unless given)."""
    values: dict[str, Any] = {
        "type": NAME,
        "correlation_id": uuid.uuid4(),
        "trigger_event_id": uuid.uuid4(),
        "subject_id": uuid.uuid4(),
        "current_step": "charge",
        "context": {"trip": "lisbon"},
        **fields,
    }
    saga = SagaInstance.objects.create(**values)
    if created_at is not None:  # auto_now_add ignores a value given to create()
        SagaInstance.objects.filter(pk=saga.pk).update(created_at=created_at)
        saga.refresh_from_db()
    return saga


def step_row(saga: SagaInstance, step: str, **fields: Any) -> SagaStep:
    values: dict[str, Any] = {"phase": "action", "attempt": 1, "status": "completed", **fields}
    return SagaStep.objects.create(saga=saga, step=step, **values)


def staff(username: str, group: str = "operator") -> Api:
    """Return an API client signed in as a new staff user of ``group`` ("operator" acts,
    "viewer" only reads)."""
    api = Api(username)
    api.user.is_staff = True
    api.user.save(update_fields=["is_staff"])
    api.user.groups.add(Group.objects.get(name=group))
    return api


def waiting_on(step: str, name: str) -> SagaInstance:
    """Start a trip and run its messages round by round in this process, until its saga
    waits on ``step``; return the saga (running, the step's message left in the broker)."""
    trigger = request_trip(name)
    for _ in range(10):
        saga = SagaInstance.objects.filter(trigger_event_id=trigger.event_id).first()
        if saga is not None and saga.current_step == step:
            return saga
        # Taken first, run after: what the runs send waits for the next round.
        waiting = [m for q in QUEUES for m in take_messages(settings.CELERY_BROKER_URL, q)]
        for message in waiting:
            assert message.task == DELIVER_TASK, message
            runtime.run(None, *message.args, **message.kwargs)
    raise AssertionError(f"the trip's saga never waited on {step}")


def failed_trip(name: str) -> SagaInstance:
    """Start a trip whose charge is refused and whose reservation can't be undone, once;
    wait until its saga has failed (an operator must act) and return it."""
    script(f"{name}:charge", "business_rule")
    script(f"{name}:reserve.undo", "business_rule")
    trigger = request_trip(name)
    failed = SagaInstance.objects.filter(trigger_event_id=trigger.event_id, state="failed")
    return wait_until(failed.first, message="the trip's saga failed")
