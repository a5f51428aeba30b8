"""Every known circuit breaker's live state, as the console shows it.

A breaker is known once it has state in the cache (its generation key, written the first
time anything asks for its state) or a recorded transition. The cache is the truth: the
transitions only name breakers the cache may have forgotten (after a restart of Redis,
or on a cache that can't list its keys, like the embedded default's file cache).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

from django.core.cache import cache

from apps.resilience.breakers import CircuitBreaker, State, _at
from apps.resilience.models import BreakerTransition


@dataclass(frozen=True)
class BreakerStatus:
    name: str
    state: State
    generation: int
    failures: int  # counted in the current generation's window
    opened_at: datetime | None
    next_probe_at: datetime | None  # when an open breaker lets its first probe through


def breaker_status(name: str) -> BreakerStatus:
    """Return the live state of breaker ``name`` (read-only: counts nothing)."""
    breaker = CircuitBreaker(name)
    snapshot = breaker.snapshot()
    opened = cache.get(breaker._key(f"g{snapshot.generation}:opened"))
    return BreakerStatus(
        name=name,
        state=snapshot.state,
        generation=snapshot.generation,
        failures=_failures_in_window(breaker, snapshot.generation),
        opened_at=_at(opened) if opened is not None else None,
        next_probe_at=snapshot.retry_at if snapshot.state is State.OPEN else None,
    )


def known_breakers() -> list[str]:
    """Return the names of every breaker with state in the cache or a transition, sorted."""
    recorded = BreakerTransition.objects.values_list("breaker", flat=True).distinct()
    return sorted({*_names_in_cache(), *recorded})


def breaker_statuses() -> list[BreakerStatus]:
    """Return the live state of every known breaker, by name."""
    return [breaker_status(name) for name in known_breakers()]


def _failures_in_window(breaker: CircuitBreaker, generation: int) -> int:
    now = int(time.time())
    seconds = range(now - breaker.config.window + 1, now + 1)
    buckets = [breaker._key(f"g{generation}:fail:{second}") for second in seconds]
    return sum(cache.get_many(buckets).values())


def _names_in_cache() -> set[str]:
    """Return the breakers whose generation key is in Redis (none on other caches)."""
    client = getattr(getattr(cache, "_cache", None), "get_client", None)
    if client is None:
        return set()
    head, tail = cache.make_key("breaker:"), ":gen"
    redis = client(None, write=False)
    found = redis.scan_iter(match=f"{_escape_glob(head)}*{tail}", count=500)
    return {key.decode()[len(head) : -len(tail)] for key in found}


def _escape_glob(text: str) -> str:
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)
