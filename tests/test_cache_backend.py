"""The Redis cache: Django's backend, with one Redis client per connection pool."""

from __future__ import annotations

import threading
import uuid

import redis
from django.core.cache import cache, caches

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


def test_the_shared_client_serves_threads_at_once() -> None:
    key = f"test:shared-client:{uuid.uuid4()}"
    cache.set(key, 0, timeout=60)

    def add() -> None:
        for _ in range(50):
            cache.incr(key)

    threads = [threading.Thread(target=add) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert cache.get(key) == 400
    assert cache.add(key, 1) is False  # the value is Redis's, not a thread's copy
    cache.delete(key)
