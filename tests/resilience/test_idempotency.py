"""At-least-once delivery, exactly-once effect: duplicates, killed workers, a missing fast path."""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Callable

import pytest
import redis
from celery import current_app
from django.conf import settings
from django.core.cache import cache
from django.test import override_settings

from apps.eventstore.registry import RecordedEvent
from apps.resilience import deliveries
from apps.resilience.models import DeadLetter, Delivery, ProcessedMessage
from tests.resilience.conftest import delivery, wait_for_status
from tests.resilience.handlers import effects, script
from tests.support.broker import free_port
from tests.support.waiting import wait_until

pytestmark = pytest.mark.django_db(transaction=True)
Job = Callable[..., RecordedEvent]


def _redeliver(recorded: RecordedEvent, handler: str = "test.scripted") -> None:
    current_app.send_task(
        "backstop.deliver", args=(handler, str(recorded.event_id)), queue="handlers"
    )


def _starts(recorded: RecordedEvent) -> int:
    found = delivery("test.scripted", recorded)
    return found.starts if found else 0


def test_the_same_message_delivered_again_has_no_second_effect(job: Job) -> None:
    recorded = job("twice")
    wait_for_status("test.scripted", recorded, Delivery.Status.SUCCEEDED)

    _redeliver(recorded)
    _redeliver(recorded)

    wait_until(lambda: _starts(recorded) == 3, message="both redeliveries to run")
    wait_for_status("test.scripted", recorded, Delivery.Status.SUCCEEDED)
    assert effects("test.scripted", "twice") == 1
    assert (
        ProcessedMessage.objects.filter(handler="test.scripted", event_id=recorded.event_id).count()
        == 1
    )


def test_without_the_redis_fast_path_the_database_mark_still_stops_a_duplicate(job: Job) -> None:
    recorded = job("no-fast-path")
    wait_for_status("test.scripted", recorded, Delivery.Status.SUCCEEDED)
    cache.delete(f"processed:test.scripted:{recorded.event_id}")

    _redeliver(recorded)

    wait_until(lambda: _starts(recorded) == 2, message="the redelivery to run")
    wait_for_status("test.scripted", recorded, Delivery.Status.SUCCEEDED)
    assert effects("test.scripted", "no-fast-path") == 1


def test_a_redis_outage_makes_the_fast_path_say_dont_know_instead_of_failing() -> None:
    dead = {
        "default": {**settings.CACHES["default"], "LOCATION": f"redis://127.0.0.1:{free_port()}/0"}
    }
    with override_settings(CACHES=dead):
        assert deliveries._done_fast("test.scripted", uuid.uuid4()) is False


def test_two_copies_running_at_once_take_effect_once(job: Job) -> None:
    script("concurrent", "block")
    recorded = job("concurrent")
    wait_until(
        lambda: redis.Redis.from_url(settings.REDIS_URL).get("pid:concurrent"), message="block"
    )

    _redeliver(recorded)  # runs on the other pool process while the first holds its transaction
    wait_until(lambda: _starts(recorded) == 2, message="the copy to start")
    redis.Redis.from_url(settings.REDIS_URL).set("release:concurrent", 1)

    wait_until(lambda: delivery("test.scripted", recorded).finishes == 2, message="both to finish")
    assert effects("test.scripted", "concurrent") == 1


def test_a_worker_process_killed_mid_handler_is_redelivered_and_takes_effect_once(job: Job) -> None:
    script("killed", "block")
    recorded = job("killed")
    client = redis.Redis.from_url(settings.REDIS_URL)
    pid = int(wait_until(lambda: client.get("pid:killed"), message="the handler to start"))

    os.kill(pid, signal.SIGKILL)  # the effect was written in the open transaction

    found = wait_for_status("test.scripted", recorded, Delivery.Status.SUCCEEDED)
    assert found.starts == 2
    assert effects("test.scripted", "killed") == 1


def test_a_message_that_keeps_killing_its_worker_is_dead_lettered_and_the_pool_serves_on(
    job: Job,
) -> None:
    script("crasher", "exit", "exit", "exit", "exit")
    recorded = job("crasher")

    found = wait_for_status("test.scripted", recorded, Delivery.Status.DEAD_LETTERED, timeout=60)

    limit = settings.RESILIENCE_WORKER_LOST_LIMIT
    assert found.starts == limit + 1
    letter = DeadLetter.objects.get(handler="test.scripted", event_id=recorded.event_id)
    assert (letter.kind, letter.severity) == ("system", "critical")
    assert "worker lost repeatedly" in letter.message
    after = job("after-the-crashes")
    wait_for_status("test.scripted", after, Delivery.Status.SUCCEEDED)
    assert effects("test.scripted", "after-the-crashes") == 1
