"""How long a worker keeps trying a broker it can't reach: tries come sooner than Celery's
own back-off, for as long as Celery would have tried."""

from __future__ import annotations

import logging
import time
import uuid

import pytest
from celery.concurrency.prefork import _is_ack_callback
from django.conf import settings
from kombu import Connection
from kombu.exceptions import OperationalError
from kombu.message import Message
from vine import ppartial

from apps.resilience.consumer import connect_soon, patience, tolerant_ack, tolerant_close
from tests.support.broker import forget_queues, free_port


def test_a_worker_keeps_trying_as_long_as_celery_would() -> None:
    assert patience(None) is None  # for ever
    assert patience(0) == 0  # one try
    assert patience(3) == 2 + 4 + 6
    assert patience(100) == sum(range(2, 31, 2)) + 85 * 30  # Celery's default: 2,790 s


def test_a_broker_that_never_answers_is_given_up_after_that_long(
    settings, caplog: pytest.LogCaptureFixture
) -> None:
    settings.BROKER_RECONNECT_MAX_SECONDS = 1
    conn = Connection(f"redis://127.0.0.1:{free_port()}/0", connect_timeout=0.5)
    started = time.monotonic()

    with pytest.raises(OperationalError), caplog.at_level("ERROR"):
        connect_soon(conn, max_retries=2)  # Celery: tries 2 s, then 4 s apart: 6 s

    assert time.monotonic() - started >= patience(2)
    tries = [r.getMessage() for r in caplog.records if "Cannot connect to" in r.getMessage()]
    # Celery's two tries, 2 and 4 s apart, become a try a second for those 6 s.
    assert len(tries) >= 5, tries
    assert all("Trying again in 1 s" in message for message in tries), tries


def test_no_retries_is_one_try(settings) -> None:
    settings.BROKER_RECONNECT_MAX_SECONDS = 1
    conn = Connection(f"redis://127.0.0.1:{free_port()}/0", connect_timeout=0.5)

    with pytest.raises(OperationalError):
        connect_soon(conn, max_retries=0)


def _closed_under_a_delivered_message(queue_name: str) -> Connection:
    """A Redis connection holding an unacknowledged message whose transport has let go of
    its connection details: the state kombu's close met when Redis restarted under a worker."""
    conn = Connection(settings.CELERY_BROKER_URL)
    queue = conn.SimpleQueue(queue_name)
    queue.put({"n": 1})
    queue.get(timeout=5)  # delivered, not acknowledged
    conn.transport.client = None
    return conn


def test_a_close_that_fails_inside_kombu_does_not_stop_the_worker(caplog) -> None:
    """Celery's consumer closes a lost connection ignoring only connection errors; kombu's
    AttributeError here once stopped a worker for good ("Unrecoverable error")."""
    name = f"backstop-close-{uuid.uuid4().hex[:8]}"
    try:
        with pytest.raises(AttributeError):  # the failure Celery would meet
            _closed_under_a_delivered_message(name).close()

        tolerant_close(_closed_under_a_delivered_message(name).close)()
    finally:
        forget_queues(settings.CELERY_BROKER_URL, name)

    assert "kombu failed closing the lost broker connection" in caplog.text


def _delivered(conn: Connection, queue_name: str) -> Message:
    queue = conn.SimpleQueue(queue_name)
    queue.put({"n": 1})
    return queue.get(timeout=5)  # delivered, not acknowledged


def test_a_message_of_a_lost_connection_settled_after_reconnecting_does_not_stop_the_worker(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A task running when its connection was lost is acknowledged later, from the event
    loop, through its old channel: kombu's AttributeError there once stopped a worker just
    after it had reconnected ("Unrecoverable error")."""
    name = f"backstop-ack-{uuid.uuid4().hex[:8]}"
    log = logging.getLogger("test")
    lost, live = Connection(settings.CELERY_BROKER_URL), Connection(settings.CELERY_BROKER_URL)
    try:
        first, second = _delivered(lost, name), _delivered(lost, name)
        lost.transport.client = None  # as Redis restarting left it (see the test above)
        tolerant_close(lost.close)()  # Celery closes the lost connection
        with pytest.raises(AttributeError):  # the failure Celery would meet
            first.ack_log_error(log, ())

        tolerant_ack(second.ack_log_error)(log, ())
        tolerant_ack(second.reject_log_error)(log, ())
        acked = _delivered(live, name)
        tolerant_ack(acked.ack_log_error)(log, ())  # a live connection's: acknowledged
    finally:
        live.release()
        forget_queues(settings.CELERY_BROKER_URL, name)

    assert acked.acknowledged
    assert caplog.text.count("could not settle a message of the lost broker connection") == 2
    # Still a message's ack and reject to Celery, which runs those during a warm shutdown.
    assert _is_ack_callback(ppartial(tolerant_ack(acked.ack_log_error), log, ()))
    assert _is_ack_callback(ppartial(tolerant_ack(acked.reject_log_error), log, ()))


def test_any_other_attribute_error_while_settling_is_raised() -> None:
    def settle(*args: object) -> None:
        raise AttributeError("a defect, not a lost connection")

    with pytest.raises(AttributeError, match="a defect"):
        tolerant_ack(settle)()
