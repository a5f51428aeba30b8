"""The API's fixed-window throttle: atomic under concurrent requests, honest about when to
come back, on Redis and on the embedded default's file cache, and open when the cache is down.

The concurrency test sends real HTTP requests to the live test server, to a view of its own
(this module is its URLconf) that needs no authentication: a request then opens no database
connection, so a hundred at once can't exhaust PostgreSQL's connections.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from django.conf import settings as django_settings
from django.core.cache import cache
from django.test import override_settings
from django.urls import path
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory
from rest_framework.views import APIView

from apps.api import throttles
from apps.api.throttles import AnonThrottle, cache_key
from tests.support.api import Api
from tests.support.broker import free_port

CLIENT = "127.0.0.1"
REQUESTS = 100


class Ping(APIView):
    """Open to anyone, throttled by the API's default throttles."""

    authentication_classes = ()
    permission_classes = ()

    def get(self, request: Request) -> Response:
        return Response({"pong": True})


urlpatterns = [path("ping/", Ping.as_view())]


def set_rate(settings: Any, scope: str, rate: str) -> None:
    rates = {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], scope: rate}
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates}


@pytest.fixture
def fresh_address_history() -> Iterator[None]:
    """Forget this address's request counts (its keys only: the broker shares the Redis db)."""
    keys = [cache_key(scope, CLIENT) for scope in ("anon", "user")]
    cache.delete_many(keys)
    yield
    cache.delete_many(keys)


def get_all_at_once(url: str, count: int) -> list[httpx.Response]:
    """GET ``url`` from ``count`` threads released together, each on its own connection."""
    barrier = threading.Barrier(count)
    responses: list[httpx.Response | BaseException] = [ValueError("not sent")] * count

    def send(index: int) -> None:
        with httpx.Client(timeout=30) as client:
            barrier.wait(timeout=30)
            try:
                responses[index] = client.get(url)
            except httpx.HTTPError as exc:
                responses[index] = exc

    threads = [threading.Thread(target=send, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    failed = [r for r in responses if not isinstance(r, httpx.Response)]
    assert not failed, failed[:3]
    return responses  # type: ignore[return-value]


@pytest.mark.urls(__name__)
@pytest.mark.usefixtures("fresh_address_history")
def test_a_hundred_concurrent_requests_at_10_per_minute_admit_10(
    live_server: Any, settings: Any
) -> None:
    set_rate(settings, "anon", "10/min")

    responses = get_all_at_once(f"{live_server.url}/ping/", REQUESTS)

    statuses = [response.status_code for response in responses]
    assert sorted(set(statuses)) == [200, 429], statuses
    assert statuses.count(200) == 10  # at most 12 is the requirement; the count is exact
    for response in responses:
        if response.status_code == 429:
            assert 1 <= int(response.headers["Retry-After"]) <= 60


@pytest.mark.usefixtures("fresh_address_history")
def test_retry_after_is_the_time_left_in_the_window(settings: Any) -> None:
    set_rate(settings, "anon", "2/hour")
    view = Ping.as_view()
    factory = APIRequestFactory()

    statuses = [view(factory.get("/ping/")).status_code for _ in range(2)]
    refused = view(factory.get("/ping/"))

    assert statuses == [200, 200]
    assert refused.status_code == 429
    left_ms = redis.Redis.from_url(django_settings.REDIS_URL).pttl(
        cache.make_and_validate_key(cache_key("anon", CLIENT))
    )
    assert 3_590_000 < left_ms <= 3_600_000  # the window opened with the first request
    assert int(refused["Retry-After"]) == pytest.approx(math.ceil(left_ms / 1000), abs=1)


@pytest.mark.django_db
def test_the_throttle_works_on_the_embedded_defaults_file_cache(
    settings: Any, tmp_path: Path, alice: Api
) -> None:
    set_rate(settings, "user", "3/day")  # a day's window: no boundary falls inside the test
    file_cache = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(tmp_path / "cache"),
        }
    }
    with override_settings(CACHES=file_cache):
        statuses = [alice.get("todos/stats/").status_code for _ in range(3)]
        refused = alice.get("todos/stats/")
        now = datetime.now(tz=UTC)

    assert statuses == [200, 200, 200]
    assert refused.status_code == 429
    midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
    assert int(refused["Retry-After"]) == pytest.approx((midnight - now).total_seconds(), abs=2)


def test_the_throttle_lets_requests_through_and_warns_when_the_cache_is_down(
    settings: Any, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_rate(settings, "anon", "1/min")
    # The warning is logged once a minute per process: make this the first of its minute.
    monkeypatch.setattr(throttles._cache_down_warning, "next_at", 0.0)
    dead = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{free_port()}/0",
        }
    }
    request = Request(APIRequestFactory().get("/ping/"))
    with override_settings(CACHES=dead), caplog.at_level(logging.WARNING):
        allowed = [AnonThrottle().allow_request(request, Ping()) for _ in range(3)]

    assert allowed == [True, True, True]
    assert "throttle anon: cache unreachable" in caplog.text
