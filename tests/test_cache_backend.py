"""The Redis cache: Django's backend, with one Redis client per connection pool."""

from __future__ import annotations

import threading
import uuid

import redis
from django.core.cache import caches

from config.cache import RedisCache


def test_the_default_cache_is_redis_with_one_client_per_pool() -> None:
    default = caches["default"]
    assert isinstance(default, RedisCache)
    backend = default._cache
    first = backend.get_client(write=True)
    assert isinstance(first, redis.Redis)
    assert backend.get_client("another-key", write=True) is first
    assert backend.get_client(write=False) is first  # one server: reads use its pool too
    assert first.connection_pool is backend._get_connection_pool(True)


def test_one_client_serves_threads_at_once() -> None:
    # Django gives each thread a cache object of its own; a backend shared anyway (as by
    # code that keeps one) hands every thread its one client.
    backend = caches["default"]._cache
    key = caches["default"].make_and_validate_key(f"test:shared-client:{uuid.uuid4()}")
    backend.set(key, 0, timeout=60)
    clients = set()

    def add() -> None:
        for _ in range(50):
            clients.add(id(backend.get_client(key, write=True)))
            backend.incr(key, 1)

    threads = [threading.Thread(target=add) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert backend.get(key, None) == 400
    assert len(clients) == 1
    backend.delete(key)
