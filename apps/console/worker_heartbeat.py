"""The worker's heartbeat: a bootstep that records it on the worker's own timer.

Registered in ``config.celery`` (``app.steps["worker"]``). Under Redis the timer is the
event loop's, so a worker whose loop is stuck stops beating too; under the embedded
default's filesystem broker it is the worker's timer thread.
"""

from __future__ import annotations

from typing import Any

from celery import bootsteps
from django.conf import settings

from apps.console.heartbeats import record_from_process
from apps.console.models import Heartbeat


class WorkerHeartbeat(bootsteps.StartStopStep):
    """Record this worker's heartbeat once its pool runs, then every ``HEARTBEAT_SECONDS``
    until it stops."""

    requires = ("celery.worker.components:Timer", "celery.worker.components:Pool")

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.tref: Any = None  # the timer entry, cancelled on stop

    def start(self, worker: Any) -> None:
        """Record a first heartbeat now and schedule the next ones on the worker's timer."""
        self.beat(worker)
        self.tref = worker.timer.call_repeatedly(
            settings.HEARTBEAT_SECONDS, self.beat, (worker,), priority=10
        )

    def stop(self, worker: Any) -> None:
        """Stop beating: the row stays, and goes stale unless the worker comes back."""
        if self.tref is not None:
            self.tref.cancel()
            self.tref = None

    def beat(self, worker: Any) -> None:
        """Record the heartbeat of this worker, by its node name (``celery@host``)."""
        record_from_process(kind=Heartbeat.Kind.WORKER, hostname=worker.hostname)
