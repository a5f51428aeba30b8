"""A handler's hooks get the recorded event and a dead-letter view; one that raises never
stops the pipeline."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable

import pytest
import redis
from django.conf import settings

from apps.eventstore.registry import RecordedEvent
from apps.resilience.models import DeadLetter, Delivery
from tests.resilience.conftest import attempts, dead_letter, wait_for_status
from tests.resilience.handlers import effects, script
from tests.support.worker import WorkerProcess, settle

pytestmark = pytest.mark.django_db(transaction=True)
HANDLER = "test.hook-raises"
Job = Callable[..., RecordedEvent]
SWALLOWED = f"handle_error of {HANDLER} raised; the pipeline goes on"


def hook_calls(recorded: RecordedEvent) -> int:
    """How many times the hook ran for ``recorded`` (it counts in Redis before raising)."""
    value = redis.Redis.from_url(settings.REDIS_URL).get(f"hook:{recorded.event_id}")
    return int(value or 0)


def what_hooks_saw(recorded: RecordedEvent) -> tuple[str, dict[str, object]]:
    """The type ``handle_error`` got, and what ``on_dead_letter`` got, for ``recorded``."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    error_hook = client.get(f"hook-saw:{recorded.event_id}") or b""
    dead_letter_hook = client.get(f"dead-letter-hook:{recorded.event_id}") or b"{}"
    return error_hook.decode(), json.loads(dead_letter_hook)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_hooks_get_the_recorded_event_and_a_view_of_the_dead_letter(job: Job) -> None:
    name = unique("D")
    script(f"hook:{name}", "validation")

    recorded = job(name)
    wait_for_status(HANDLER, recorded, Delivery.Status.DEAD_LETTERED)
    settle()

    letter = dead_letter(HANDLER, recorded)
    error_hook, dead_letter_hook = what_hooks_saw(recorded)
    assert error_hook == "RecordedEvent"
    assert dead_letter_hook == {
        "event": "RecordedEvent",
        "letter": "DeadLetterView",
        "id": letter.pk,
        "handler": HANDLER,
        "kind": "validation",
        "severity": letter.severity,
        "exception_type": "apps.resilience.taxonomy.InvalidInput",
        "message": letter.message,
        "attempts": 1,
        "event_id": str(recorded.event_id),
    }


def test_a_raising_hook_is_swallowed_and_the_next_job_is_processed_normally(
    job: Job, worker: WorkerProcess
) -> None:
    failing, following = unique("A"), unique("B")
    script(f"hook:{failing}", "validation")
    logged_before = worker.output().count(SWALLOWED)

    a = job(failing)
    wait_for_status(HANDLER, a, Delivery.Status.DEAD_LETTERED)
    b = job(following)
    wait_for_status(HANDLER, b, Delivery.Status.SUCCEEDED)
    settle()

    assert hook_calls(a) == 1
    # The dead letter is the handler's own failure, not the hook's RuntimeError.
    assert [(x.kind, x.exception_type, x.outcome) for x in attempts(HANDLER, a)] == [
        ("validation", "InvalidInput", "dead_letter")
    ]
    letter = dead_letter(HANDLER, a)
    assert (letter.kind, letter.exception_type) == (
        "validation",
        "apps.resilience.taxonomy.InvalidInput",
    )
    assert DeadLetter.objects.count() == 1
    assert worker.output().count(SWALLOWED) == logged_before + 1
    assert effects(HANDLER, failing) == 0
    assert effects(HANDLER, following) == 1
    assert hook_calls(b) == 0  # the hook runs on failures only


def test_a_raising_hook_does_not_stop_a_retryable_failure_from_being_retried(job: Job) -> None:
    name = unique("C")
    script(f"hook:{name}", "transient", "transient")

    recorded = job(name)
    wait_for_status(HANDLER, recorded, Delivery.Status.SUCCEEDED)
    settle()

    assert hook_calls(recorded) == 2
    assert [(x.kind, x.outcome) for x in attempts(HANDLER, recorded)] == [
        ("transient", "retry"),
        ("transient", "retry"),
    ]
    assert effects(HANDLER, name) == 1
    assert not DeadLetter.objects.exists()
