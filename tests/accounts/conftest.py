"""Token-endpoint helpers: an anonymous client, a login, and clean login counters."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.core.cache import cache
from rest_framework.test import APIClient

from apps.accounts.authentication import checked_tokens
from apps.accounts.throttles import username_client
from apps.api.throttles import cache_key

TOKEN_URL = "/api/v1/auth/token/"
ADDRESSES = ("127.0.0.1", "10.0.0.7")
USERNAMES = ("alice", "bob", "carol", "dave", "olivia")


def anonymous(address: str = "127.0.0.1") -> APIClient:
    """Return a client with no credentials, sending from ``address``."""
    client = APIClient(REMOTE_ADDR=address)
    client.raise_request_exception = False
    return client


def log_in(username: str, password: str, address: str = "127.0.0.1") -> Any:
    """Return the token endpoint's response to ``username`` and ``password`` from ``address``."""
    body = {"username": username, "password": password}
    return anonymous(address).post(TOKEN_URL, body, format="json")


def set_rates(settings: Any, **rates: str) -> None:
    """Give the throttle ``scope=rate`` pairs to this test (DRF reloads its settings)."""
    merged = {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], **rates}
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": merged}


def _login_keys() -> list[str]:
    keys = [cache_key("login_address", address) for address in ADDRESSES]
    keys += [cache_key("login_username", username_client(name)) for name in USERNAMES]
    return keys


@pytest.fixture(autouse=True)
def fresh_login_counts() -> Iterator[None]:
    """Forget the token endpoint's counts for the test's addresses and users (keys only:
    the broker shares the Redis db), before and after, so no other test is throttled."""
    cache.delete_many(_login_keys())
    yield
    cache.delete_many(_login_keys())


@pytest.fixture(autouse=True)
def no_remembered_tokens() -> Iterator[None]:
    """Start and end each test with this process's token cache empty."""
    checked_tokens.clear()
    yield
    checked_tokens.clear()
