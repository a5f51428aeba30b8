"""A worker keeps its database connection between deliveries, and replaces a broken one."""

from __future__ import annotations

import uuid

import pytest
import redis
from django.conf import settings
from django.db import connection

from apps.eventstore import store
from apps.eventstore.store import CommandContext
from apps.resilience.models import Attempt, Delivery
from tests.resilience.handlers import ConnectionProbed
from tests.support.waiting import wait_until
from tests.support.worker import WorkerProcess, settle

pytestmark = pytest.mark.django_db(transaction=True)
HANDLER = "test.backend-pid"


@pytest.fixture
def probe(worker: WorkerProcess):
    """Deliver a probe event to the session's worker and return the backend pid that ran it."""
    name = uuid.uuid4().hex
    key = f"backend:{name}"
    client = redis.Redis.from_url(settings.REDIS_URL)

    def run() -> int:
        before = client.llen(key)
        [recorded] = store.append(
            stream_type="test.probe",
            stream_id=uuid.uuid4(),
            expected_version=0,
            events=[ConnectionProbed(name=name)],
            context=CommandContext(actor_id="tests"),
        )
        wait_until(
            lambda: Delivery.objects.filter(
                handler=HANDLER, event_id=recorded.event_id, status="succeeded"
            ).exists(),
            timeout=30,
            message="the probe to be delivered",
        )
        assert client.llen(key) == before + 1
        return int(client.lindex(key, -1))

    yield run
    settle()


def test_deliveries_reuse_the_worker_processes_connections(probe) -> None:
    pids = [probe() for _ in range(8)]

    # Two worker processes, one connection each: not a new connection per delivery.
    assert len(set(pids)) <= 2, pids


def test_a_connection_the_server_dropped_is_replaced_before_the_next_delivery(
    probe, worker: WorkerProcess
) -> None:
    first = {probe() for _ in range(4)}
    log_before = len(worker.output())
    with connection.cursor() as cursor:
        for pid in first:
            cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
    wait_until(
        lambda: not _alive(first), timeout=10, message="the worker's backends to be terminated"
    )

    after = {probe() for _ in range(4)}

    assert not after & first  # new connections
    # ... made before the delivery ran: nothing failed on the dead one or was retried for it.
    assert not Attempt.objects.filter(delivery__handler=HANDLER).exists()
    new_output = worker.output()[log_before:]
    assert "failed outside the handler" not in new_output
    assert "OperationalError" not in new_output, new_output


def _alive(pids: set[int]) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", [list(pids)])
        return cursor.fetchone()[0] > 0
