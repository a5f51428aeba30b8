"""Heartbeats of the worker and beat processes: written by each process, read by /health/.

The worker records its heartbeat from a bootstep on its own timer
(``apps.console.worker_heartbeat``), beat from its scheduler's tick
(``apps.console.beat``); the web process reads the freshest of each kind.

Why a table in the database, rather than Redis or Celery's remote control:

- Every process already holds a connection to it, whatever the host, and it is the store
  Backstop trusts: a Redis flush or restart without persistence forgets nothing here.
- It is the one store the embedded default shares between its processes: there is no
  Redis, and its cache is a directory of files.
- Ages are measured by one clock: writers stamp the database's ``NOW()`` and the reader
  compares it with the database's ``NOW()``, so hosts' clocks never skew an age.
- ``celery inspect ping`` (and beat's pidbox since Celery 5.7) only answers "alive now":
  each /health/ request would wait out a broker round trip, a missing process would cost
  the whole timeout, and there would be no "last seen" to report.

The cost: one single-statement upsert per process every ``HEARTBEAT_SECONDS``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import datetime

from django.db import DatabaseError, close_old_connections
from django.db.models.functions import Now

from apps.console.models import Heartbeat

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sighting:
    """The freshest heartbeat of one kind of process, and how old it is."""

    hostname: str
    pid: int
    last_seen: datetime
    age_seconds: float


def record_heartbeat(*, kind: str, hostname: str, pid: int) -> None:
    """Record that process ``pid`` of ``kind`` on ``hostname`` is alive now: one
    ``INSERT … ON CONFLICT (kind, hostname) DO UPDATE`` stamped with the database's clock."""
    Heartbeat.objects.bulk_create(
        [Heartbeat(kind=kind, hostname=hostname, pid=pid, last_seen=Now())],
        update_conflicts=True,
        unique_fields=["kind", "hostname"],
        update_fields=["pid", "last_seen"],
    )


def record_from_process(*, kind: str, hostname: str) -> bool:
    """Record this process's heartbeat from a long-lived worker or beat; return whether it
    was written. A database error is logged, never raised: the process outlives an outage.

    1. Drop this thread's connection if it broke or outlived ``CONN_MAX_AGE``, as Django
       does around each request (nothing else does it for a timer or a scheduler).
    2. Upsert the heartbeat.
    """
    try:
        close_old_connections()
        record_heartbeat(kind=kind, hostname=hostname, pid=os.getpid())
    except DatabaseError as exc:
        logger.warning("could not record the %s heartbeat of %s: %s", kind, hostname, exc)
        return False
    return True


def freshest_heartbeat(kind: str) -> Sighting | None:
    """Return the most recent heartbeat of ``kind`` with its age, or None if none was
    ever recorded."""
    row = (
        Heartbeat.objects.filter(kind=kind)
        .annotate(db_now=Now())
        .order_by("-last_seen")
        .values("hostname", "pid", "last_seen", "db_now")
        .first()
    )
    if row is None:
        return None
    age = max(0.0, (row["db_now"] - row["last_seen"]).total_seconds())
    return Sighting(row["hostname"], row["pid"], row["last_seen"], age)
