"""Beat's heartbeat: django-celery-beat's DatabaseScheduler, recording it as it ticks.

Run beat with ``--scheduler apps.console.beat:HeartbeatScheduler`` (the Procfile does;
``CELERY_BEAT_SCHEDULER`` names it too). The heartbeat is written after a scheduler pass
completes, so a beat whose scheduler is stuck stops beating. As it starts, the scheduler puts
Backstop's periodic tasks back on the intervals their settings give
(``apps.eventstore.schedules.sync_intervals``).
"""

from __future__ import annotations

import socket
import time
from typing import Any

from django.conf import settings
from django_celery_beat.schedulers import DatabaseScheduler

from apps.console.heartbeats import record_from_process
from apps.console.models import Heartbeat
from apps.eventstore.schedules import sync_intervals


class HeartbeatScheduler(DatabaseScheduler):
    """The database scheduler, plus beat's heartbeat every ``HEARTBEAT_SECONDS``."""

    _next_heartbeat = 0.0  # monotonic time the next heartbeat is due: the first tick's

    def setup_schedule(self) -> None:
        """Put Backstop's periodic tasks on their settings' intervals, then load the schedule:
        an interval in settings wins over one edited in the admin at every beat start."""
        sync_intervals()
        super().setup_schedule()

    def tick(self, *args: Any, **kwargs: Any) -> float:
        """Run one scheduler pass, then record the heartbeat when due; return the seconds
        to sleep before the next pass, never past the next heartbeat."""
        delay = super().tick(*args, **kwargs)
        now = time.monotonic()
        if now >= self._next_heartbeat:
            record_from_process(kind=Heartbeat.Kind.BEAT, hostname=socket.gethostname())
            self._next_heartbeat = now + settings.HEARTBEAT_SECONDS
        return min(delay, self._next_heartbeat - now)
