"""What a failed append's database error means: a ``ConcurrencyConflict``, or something else.

An append finds a stream not at its expected version in one of two ways: the
``eventstore_append`` function (migration 0005) raises ``VERSION_MISMATCH`` with the
stream's actual version, or the unique ``(stream_id, version)`` constraint rejects a row.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from django.db import DatabaseError, IntegrityError

from apps.eventstore.exceptions import ConcurrencyConflict

# The SQLSTATE eventstore_append raises when a stream is not at the expected version.
VERSION_MISMATCH = "BSV01"
# The unique constraint behind optimistic concurrency (see Event.Meta).
STREAM_VERSION_CONSTRAINT = "event_stream_version_uniq"


def conflict_from(
    exc: DatabaseError, stream_id: uuid.UUID, expected_version: int
) -> Exception | None:
    """Return the ``ConcurrencyConflict`` a database error means, or None if it is another
    error: the append function's version mismatch, or the unique (stream, version)
    constraint (only reachable when a writer bypassed the append lock), which names no
    stream: the conflict then names ``stream_id`` and ``expected_version``, the first
    append's."""
    # Any: the driver's error (psycopg's, with ``diag``), read without importing the driver.
    cause: Any = exc.__cause__
    if getattr(cause, "sqlstate", None) == VERSION_MISMATCH:
        detail = json.loads(cause.diag.message_detail)
        return ConcurrencyConflict(
            uuid.UUID(detail["stream_id"]), detail["expected"], detail["actual"]
        )
    if isinstance(exc, IntegrityError) and _is_stream_version_violation(exc):
        return ConcurrencyConflict(stream_id, expected_version, -1)
    return None


def _is_stream_version_violation(exc: IntegrityError) -> bool:
    diag = getattr(exc.__cause__, "diag", None)
    if diag is not None:  # PostgreSQL names the constraint
        return diag.constraint_name == STREAM_VERSION_CONSTRAINT
    return "stream_id" in str(exc) and "version" in str(exc)  # SQLite names the columns
