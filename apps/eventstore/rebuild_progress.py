"""A projection rebuild run for the console: one at a time, its progress in the cache.

The console asks for a rebuild with ``request_rebuild`` and the task runs it with
``run_rebuild``; the page reads ``progress``. Two guards refuse a second rebuild:

1. ``request_rebuild`` adds a lock key (``SET NX``): a second press while the first is
   queued or running is refused at once, before anything is sent;
2. the rebuild itself claims the projection's row (``projections._claim_rebuild``), so
   a rebuild started elsewhere (``manage.py rebuild_projection``) still excludes this one.

The lock expires after ``LOCK_SECONDS`` in case the task is lost or its worker dies.
"""

from __future__ import annotations

from typing import Any

from celery import current_app
from django.core.cache import cache
from django.db import transaction
from django.utils import timezone

from apps.eventstore import projections
from apps.eventstore.models import ProjectionState

REBUILD_TASK = "backstop.projections.rebuild"

LOCK_SECONDS = 3600
# How long the page keeps showing a finished rebuild's outcome.
KEEP_SECONDS = 86_400


def _key(name: str) -> str:
    return f"projection-rebuild:{name}"


def request_rebuild(name: str) -> bool:
    """Take the rebuild lock of ``name`` and record the rebuild as queued; return whether
    it was free (``False``: one is queued or running, send nothing)."""
    if not cache.add(f"{_key(name)}:lock", 1, timeout=LOCK_SECONDS):
        return False
    _save(name, status="queued", applied=0, total=projections.count_events(name))
    return True


def queue_rebuild(name: str) -> bool:
    """Ask for a rebuild of ``name``: the task is sent once the caller's transaction
    commits; return ``False`` (nothing sent) while another is queued or running."""
    if ProjectionState.objects.filter(name=name, rebuilding__isnull=False).exists():
        return False
    if not request_rebuild(name):
        return False
    transaction.on_commit(lambda: current_app.send_task(REBUILD_TASK, args=(name,)))
    return True


def progress(name: str) -> dict[str, Any] | None:
    """Return the latest rebuild's status, events applied and total, or ``None``."""
    found = cache.get(_key(name))
    return found if isinstance(found, dict) else None


def is_locked(name: str) -> bool:
    return cache.get(f"{_key(name)}:lock") is not None


def run_rebuild(name: str, *, batch: int = 1000) -> projections.RebuildReport | None:
    """Rebuild ``name``, counting its progress; release the lock however it ends.

    Returns ``None`` when another rebuild of the projection holds its row (refused).
    """
    total = projections.count_events(name)
    state: dict[str, Any] = {"applied": 0, "total": total, "started_at": timezone.now()}

    def advance(done: int) -> None:
        state["applied"] += done
        _save(name, status="running", **state)

    try:
        _save(name, status="running", **state)
        report = projections.rebuild(name, batch=batch, progress=advance)
    except projections.RebuildInProgress as exc:
        _save(name, status="refused", error=str(exc), **state)
        return None
    except Exception as exc:
        _save(name, status="failed", error=f"{type(exc).__name__}: {exc}"[:500], **state)
        raise
    finally:
        cache.delete(f"{_key(name)}:lock")
    # The last events are applied under the append lock, without a progress call.
    state.update(applied=report.events, total=max(total, report.events))
    _save(name, status="finished", generation=report.generation, **state)
    return report


def _save(name: str, **fields: Any) -> None:
    cache.set(_key(name), {**fields, "updated_at": timezone.now()}, timeout=KEEP_SECONDS)
