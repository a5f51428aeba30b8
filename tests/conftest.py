"""Shared fixtures: every test runs against the real PostgreSQL and Redis, never a stand-in."""

from __future__ import annotations

import os

import pytest
from django.conf import settings

from tests.support import timings
from tests.support.services import (
    isolate_redis_per_xdist_worker,
    require_debug,
    require_real_services,
)


def pytest_configure(config: pytest.Config) -> None:
    """Fail loudly without PostgreSQL and Redis; give each xdist worker its own Redis db."""
    require_real_services(settings)
    require_debug(settings)
    isolate_redis_per_xdist_worker(settings, os.environ.get("PYTEST_XDIST_WORKER", "gw0"))
    timings.apply(settings)


pytest_plugins = ["tests.support.worker", "tests.support.api", "tests.support.probe"]
