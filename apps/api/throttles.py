"""API throttles: a fixed-window request counter per client in the shared cache.

A client's window opens with its first request and lasts the rate's period; every request
adds one to the window's counter, and one past the limit is refused with the seconds left
in the window (``Retry-After``). On Redis the count is one atomic script: ``INCR``, and
``EXPIRE`` when the key has no expiry yet (the first increment), so concurrent requests
never read the same count. Django's own ``cache.incr`` is ``EXISTS`` then ``INCR``: a key
expiring between the two would come back without an expiry and hold its client over the
limit for good. Other caches (the embedded default's file cache) use ``add`` then ``incr``
on a key named for the wall-clock window, which is atomic enough for one host.

When the cache can't be reached the throttle fails open: the request is served and a
warning logged (once a minute per process). An API without rate limits for a while is
better than an API that answers 500 to everyone.

Rates are DRF's ``DEFAULT_THROTTLE_RATES`` (``"1200/min"``; s, m, h, d by first letter),
read on every request, so a changed setting applies at once.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from django.core.cache import caches
from django.core.cache.backends.base import BaseCache
from django.core.cache.backends.redis import RedisCache
from redis.commands.core import Script
from rest_framework.settings import api_settings
from rest_framework.throttling import BaseThrottle

if TYPE_CHECKING:  # DRF's views import the throttle classes named in the settings: no cycle
    from rest_framework.request import Request
    from rest_framework.views import APIView

logger = logging.getLogger(__name__)

_PERIODS = {"s": 1, "m": 60, "h": 3_600, "d": 86_400}
# KEYS[1] the counter, ARGV[1] the window in seconds; returns {count, milliseconds left}.
# A key without an expiry (-1) is new, or lost its expiry somehow: give it the window.
# No client: the script is bytes, so Script never needs one to encode it (the stub insists).
_COUNT_SCRIPT = Script(
    None,  # type: ignore[arg-type]
    b"""
    local count = redis.call('INCR', KEYS[1])
    local left = redis.call('PTTL', KEYS[1])
    if left < 0 then
        redis.call('EXPIRE', KEYS[1], ARGV[1])
        left = ARGV[1] * 1000
    end
    return {count, left}
    """,
)
_WARN_EVERY_SECONDS = 60.0


@dataclass(frozen=True)
class Rate:
    limit: int
    period: int  # seconds


@dataclass(frozen=True)
class Window:
    count: int  # requests in the window, this one included
    seconds_left: int  # at least 1


def parse_rate(rate: str | None) -> Rate | None:
    """Return ``"10/min"`` as ``Rate(10, 60)``; ``None`` (no rate) means no limit."""
    if rate is None:
        return None
    limit, period = rate.split("/")
    return Rate(int(limit), _PERIODS[period[0]])


def cache_key(scope: str, client: str) -> str:
    """Return the cache key counting ``client``'s requests in ``scope``."""
    return f"throttle:{scope}:{client}"


def count_request(key: str, period: int) -> Window:
    """Add one request to ``key``'s current window; return the window's count and time left.

    Raises whatever the cache raises when it can't be reached.
    """
    backend = caches["default"]
    if isinstance(backend, RedisCache):
        return _count_on_redis(backend, key, period)
    return _count_in_cache(backend, key, period)


def _count_on_redis(backend: RedisCache, key: str, period: int) -> Window:
    full_key = backend.make_and_validate_key(key)  # the cache's prefix and version
    # Django's connection pool for this cache (its client wrapper has no public accessor).
    client = backend._cache.get_client(full_key, write=True)
    count, left_ms = _COUNT_SCRIPT(keys=[full_key], args=[period], client=client)
    return Window(int(count), max(1, math.ceil(int(left_ms) / 1000)))


def _count_in_cache(backend: BaseCache, key: str, period: int) -> Window:
    now = time.time()
    start = int(now // period * period)
    window_key = f"{key}:{start}"  # a new key per window: an expired one is never incremented
    backend.add(window_key, 0, timeout=period + 1)
    count = backend.incr(window_key)
    return Window(count, max(1, math.ceil(start + period - now)))


class _Everyso:
    """Say yes at most once every ``seconds`` (per process), so an outage can't flood the log."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.next_at = 0.0

    def ready(self) -> bool:
        now = time.monotonic()
        if now < self.next_at:
            return False
        self.next_at = now + self.seconds
        return True


_cache_down_warning = _Everyso(_WARN_EVERY_SECONDS)


class FixedWindowThrottle(BaseThrottle):
    """Allow ``DEFAULT_THROTTLE_RATES[scope]`` requests per window per client."""

    scope = ""

    def __init__(self) -> None:
        self.seconds_left: int | None = None

    def client(self, request: Request) -> str | None:
        """Return who the request counts against, or ``None`` when it isn't throttled here."""
        raise NotImplementedError

    def allow_request(self, request: Request, view: APIView) -> bool:
        """Return whether the request is within its client's rate; ``True`` without a cache."""
        # The stubs type the rates as numbers; DRF's are "N/period" strings (or None).
        rate = parse_rate(cast("str | None", api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)))
        client = self.client(request)
        if rate is None or client is None:
            return True
        try:
            window = count_request(cache_key(self.scope, client), rate.period)
        except Exception as exc:  # any cache failure: fail open, serve the request
            if _cache_down_warning.ready():
                logger.warning(
                    "throttle %s: cache unreachable, requests pass unthrottled (%s: %s)",
                    self.scope,
                    type(exc).__name__,
                    exc,
                )
            return True
        self.seconds_left = window.seconds_left
        return window.count <= rate.limit

    def wait(self) -> float | None:
        """Return the seconds left in the window of a refused request."""
        return self.seconds_left


class UserThrottle(FixedWindowThrottle):
    """Per signed-in user (an anonymous request counts against its address), ``user`` rate."""

    scope = "user"

    def client(self, request: Request) -> str | None:
        if request.user and request.user.is_authenticated:
            return str(request.user.pk)
        return self.get_ident(request)


class AnonThrottle(FixedWindowThrottle):
    """Per address, anonymous requests only, ``anon`` rate."""

    scope = "anon"

    def client(self, request: Request) -> str | None:
        if request.user and request.user.is_authenticated:
            return None
        return self.get_ident(request)
