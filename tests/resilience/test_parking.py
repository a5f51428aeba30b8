"""Ordered handlers: a stream's later events wait behind its dead letter, then go in order."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
import redis
from django.conf import settings
from django.contrib.auth import get_user_model

from apps.eventstore.registry import RecordedEvent
from apps.resilience.models import DeadLetter, Delivery, ParkedMessage
from apps.resilience.services import dead_letters
from tests.resilience.conftest import dead_letter, wait_for_status
from tests.resilience.handlers import effects, script
from tests.support.waiting import wait_until
from tests.support.worker import settle

pytestmark = pytest.mark.django_db(transaction=True)
ORDERED = "test.ordered"
Job = Callable[..., RecordedEvent]


@pytest.fixture
def operator() -> Any:
    return get_user_model().objects.create_user("operator", "operator@example.com")


def applied(stream_id: uuid.UUID) -> list[int]:
    """The versions of ``stream_id`` the ordered handler applied, in the order it did."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    return [int(v) for v in client.lrange(f"applied:{stream_id}", 0, -1)]


def wait_for_applied(stream_id: uuid.UUID, count: int) -> list[int]:
    wait_until(lambda: len(applied(stream_id)) >= count, message=f"{count} versions applied")
    settle()
    return applied(stream_id)


def names(prefix: str, count: int) -> list[str]:
    tag = uuid.uuid4().hex[:8]
    return [f"{prefix}-{tag}-v{n}" for n in range(1, count + 1)]


def append_in_order(job: Job, stream_id: uuid.UUID, names: list[str]) -> list[RecordedEvent]:
    """Append one version at a time, each only once the ordered handler is done with the last."""
    done = (Delivery.Status.SUCCEEDED, Delivery.Status.DEAD_LETTERED, Delivery.Status.PARKED)
    recorded = []
    for version, name in enumerate(names):
        event = job(name, stream_id=stream_id, version=version)
        wait_for_status(ORDERED, event, *done)
        recorded.append(event)
    return recorded


def parked(event: RecordedEvent) -> ParkedMessage:
    return ParkedMessage.objects.get(handler=ORDERED, event_id=event.event_id)


def blocked_stream(job: Job) -> tuple[uuid.UUID, list[RecordedEvent], DeadLetter]:
    """A stream of four versions whose second failed for the ordered handler."""
    stream_id = uuid.uuid4()
    versions = names("ordered", 4)
    script(f"ordered:{versions[1]}", "validation")  # once: the next run of version 2 is ok
    recorded = append_in_order(job, stream_id, versions)
    return stream_id, recorded, dead_letter(ORDERED, recorded[1])


def test_later_versions_wait_behind_a_dead_letter_and_follow_its_retry_in_order(
    job: Job, operator: Any
) -> None:
    stream_id, [v1, v2, v3, v4], letter = blocked_stream(job)

    assert wait_for_status(ORDERED, v1, Delivery.Status.SUCCEEDED)
    assert wait_for_status(ORDERED, v2, Delivery.Status.DEAD_LETTERED)
    for event in (v3, v4):
        assert wait_for_status(ORDERED, event, Delivery.Status.PARKED)
        held = parked(event)
        assert (held.status, held.version, held.blocked_by_id) == (
            ParkedMessage.Status.PENDING,
            event.version,
            letter.pk,
        )
        assert held.reason == f"blocked by dead letter {letter.pk}"
    assert applied(stream_id) == [1]

    dead_letters.retry(letter.pk, actor=operator)

    assert wait_for_applied(stream_id, 4) == [1, 2, 3, 4]
    assert DeadLetter.objects.get(pk=letter.pk).status == DeadLetter.Status.RESOLVED
    for event in (v3, v4):
        released = parked(event)
        assert released.status == ParkedMessage.Status.RELEASED
        assert released.released_at is not None
        assert Delivery.objects.get(handler=ORDERED, event_id=event.event_id).status == (
            Delivery.Status.SUCCEEDED
        )


def test_resolving_the_dead_letter_releases_the_parked_versions_in_order(
    job: Job, operator: Any
) -> None:
    stream_id, [_, v2, v3, v4], letter = blocked_stream(job)
    assert applied(stream_id) == [1]

    dead_letters.resolve(letter.pk, actor=operator, notes="version 2 applied by hand")

    assert wait_for_applied(stream_id, 3) == [1, 3, 4]  # version 2 itself is never re-run
    assert [parked(e).status for e in (v3, v4)] == [ParkedMessage.Status.RELEASED] * 2
    assert Delivery.objects.get(handler=ORDERED, event_id=v2.event_id).status == (
        Delivery.Status.DEAD_LETTERED
    )


def test_discarding_the_dead_letter_releases_the_parked_versions_too(
    job: Job, operator: Any
) -> None:
    stream_id, _, letter = blocked_stream(job)

    dead_letters.discard(letter.pk, actor=operator, reason="a bad import, skip it")

    assert wait_for_applied(stream_id, 3) == [1, 3, 4]


def test_a_handler_that_is_not_ordered_is_never_parked(job: Job) -> None:
    stream_id = uuid.uuid4()
    first, second = names("unordered", 2)
    script(first, "validation")  # test.scripted fails version 1...
    script(f"ordered:{first}", "validation")  # ...and so does the ordered handler
    v1, v2 = append_in_order(job, stream_id, [first, second])

    wait_for_status("test.scripted", v1, Delivery.Status.DEAD_LETTERED)
    wait_for_status("test.scripted", v2, Delivery.Status.SUCCEEDED)
    settle()
    assert effects("test.scripted", second) == 1
    assert not ParkedMessage.objects.filter(handler="test.scripted").exists()
    # The same stream does hold the ordered handler back: the difference is the handler's.
    assert parked(v2).status == ParkedMessage.Status.PENDING
    assert applied(stream_id) == []


def test_a_dead_letter_in_one_stream_does_not_hold_back_another_stream(job: Job) -> None:
    blocked, free = uuid.uuid4(), uuid.uuid4()
    blocked_names, free_names = names("blocked", 2), names("free", 3)
    script(f"ordered:{blocked_names[0]}", "validation")
    b1, b2 = append_in_order(job, blocked, blocked_names)

    # The free stream's versions come after the dead letter and while version 2 is parked.
    append_in_order(job, free, free_names)

    assert wait_for_applied(free, 3) == [1, 2, 3]
    assert not ParkedMessage.objects.filter(stream_id=free).exists()
    assert dead_letter(ORDERED, b1).status == DeadLetter.Status.PENDING
    assert parked(b2).status == ParkedMessage.Status.PENDING
    assert applied(blocked) == []
