"""Shared fixtures: every test runs against the real PostgreSQL and Redis, never a stand-in."""

from __future__ import annotations

import os

import pytest
from django.conf import settings

from tests.support import timings
from tests.support.services import (
    claim_run_slot,
    database_suffix,
    isolate_redis_per_xdist_worker,
    require_debug,
    require_real_services,
)


def pytest_configure(config: pytest.Config) -> None:
    """Fail loudly without PostgreSQL and Redis; give each xdist worker its own Redis db,
    and this run databases and Redis dbs no other run on the machine uses."""
    require_real_services(settings)
    require_debug(settings)
    slot = claim_run_slot()
    isolate_redis_per_xdist_worker(settings, os.environ.get("PYTEST_XDIST_WORKER", "gw0"), slot)
    timings.apply(settings)
    # Django's advice for test speed: the personas' passwords needn't resist cracking.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


pytest_plugins = [
    "tests.support.worker",
    "tests.support.inline",
    "tests.support.api",
    "tests.support.probe",
]


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix: None) -> None:
    """Name the test databases after this run's slot too (after xdist's worker suffix)."""
    suffix = database_suffix(claim_run_slot())
    if suffix is None:
        return
    for db in settings.DATABASES.values():
        test = db.setdefault("TEST", {})
        test["NAME"] = f"{test.get('NAME') or 'test_' + db['NAME']}_{suffix}"


@pytest.fixture(autouse=True)
def _no_projection_nudge_left_over() -> None:
    """Start each test with no projection nudge flag or note in the cache.

    In production a flag whose message was lost expires and the outbox sweep nudges again;
    tests run no beat, and a test that stops its worker or broker (the ledger-fault tests)
    can leave a flag set with no message behind it, which would coalesce away the next
    test's nudges."""
    from apps.eventstore.following import clear_nudges

    clear_nudges()
