"""The in-process tier: deliveries run in the test's own process, when the test waits.

Everything up to the broker is production's path: the command commits its events and
outbox rows, the relay publishes after commit and records the ledger's expected
deliveries, and the messages wait in the test's Redis db. Only the consuming worker is
replaced: ``InlineWorker.run_waiting`` takes the waiting messages off the queues and runs
each in this process (a delivery through the runtime's own ``run``, any other task with
Celery's ``Task.apply``). ``wait_until`` calls it before every check, so a test that
waits for the read model gets it at once and deterministically, whatever the load on the
machine. Retries and deferrals go back to the broker with their countdown and run when due.

What needs a real worker process (retries against time, worker loss, poison messages,
time limits, the ledger's re-sends) keeps the ``worker`` fixture or starts its own.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from celery import current_app
from django.conf import settings

from apps.eventstore.relay import DELIVER_TASK
from apps.resilience import runtime
from tests.support import worker as session_worker
from tests.support.broker import Message, take_messages
from tests.support.waiting import running_before_each_check

QUEUES = ("handlers", "default", "maintenance")
# A test that keeps producing messages (a handler that appends forever) fails, not hangs.
MAX_MESSAGES_PER_RUN = 5_000
logger = logging.getLogger(__name__)


@dataclass
class InlineWorker:
    """Runs the broker's waiting messages in this process; keeps those not yet due."""

    scheduled: list[Message] = field(default_factory=list)
    ran: int = 0

    def run_waiting(self) -> int:
        """Run every message that is waiting and due, including those the runs send, until
        none is left; return how many ran. Messages with a later ETA are kept for later."""
        count = 0
        while True:
            self.scheduled.extend(_take_all(settings.CELERY_BROKER_URL))
            due = [message for message in self.scheduled if message.due()]
            if not due:
                self.ran += count
                return count
            self.scheduled = [message for message in self.scheduled if not message.due()]
            for message in due:
                _run(message)
            count += len(due)
            if count > MAX_MESSAGES_PER_RUN:
                raise AssertionError(f"over {MAX_MESSAGES_PER_RUN} messages in one run: a loop?")


def _take_all(broker_url: str) -> Iterator[Message]:
    """Remove and yield every message waiting in the queues."""
    for queue in QUEUES:
        yield from take_messages(broker_url, queue)


def _run(message: Message) -> None:
    """Run one message as a worker would: a delivery through the runtime (whose retries are
    sent back to the broker with their countdown), any other task through ``Task.apply``."""
    if message.task == DELIVER_TASK:
        runtime.run(None, *message.args, **message.kwargs)
        return
    task = current_app.tasks[message.task]
    task.apply(args=message.args, kwargs=message.kwargs, task_id=message.id, throw=True)


@pytest.fixture
def inline_worker() -> Iterator[InlineWorker]:
    """Run deliveries in this process whenever the test waits (the test must be
    ``transaction=True``: the relay publishes after a real commit)."""
    session_worker.pause_session_worker()
    current_app.loader.import_default_modules()  # the tasks modules, as a worker imports them
    worker = InlineWorker()
    with running_before_each_check(worker.run_waiting):
        yield worker
    worker.run_waiting()
    if worker.scheduled:
        logger.info("dropped %d messages scheduled past the test", len(worker.scheduled))
