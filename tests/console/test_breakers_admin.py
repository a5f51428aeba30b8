"""The circuit breakers page: live state from the cache; operators reset and force, audited.

Olivia is the operator (a superuser). Sam is staff without the breaker permission: he sees
the page but can't change a breaker.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from apps.resilience.breaker_status import known_breakers
from apps.resilience.breakers import CircuitBreaker, State
from apps.resilience.models import BreakerTransition
from apps.resilience.taxonomy import Unavailable

# Transitions made outside a transaction are written at once, as on a worker.
pytestmark = pytest.mark.django_db(transaction=True)
PAGE = "/admin/console/breakers/"


@pytest.fixture
def olivia() -> Any:
    return get_user_model().objects.create_superuser("olivia", "olivia@example.test", "pw-1")


@pytest.fixture
def operator(olivia: Any) -> Client:
    client = Client()
    client.force_login(olivia)
    return client


@pytest.fixture
def sam() -> Client:
    client = Client()
    client.force_login(get_user_model().objects.create_user("sam", is_staff=True))
    return client


@pytest.fixture
def slow_reset(settings: Any) -> None:
    """An open breaker stays open for the whole test."""
    settings.BREAKER_RESET_TIMEOUT = 600.0


def failing(times: int) -> CircuitBreaker:
    """Return a fresh breaker after ``times`` failed calls through it."""
    breaker = CircuitBreaker(f"page-{uuid.uuid4().hex[:8]}")
    for _ in range(times):
        breaker.record_failure(breaker.acquire(), "ConnectError: refused")
    return breaker


def listed(client: Client, name: str) -> Any:
    response = client.get(PAGE)
    assert response.status_code == 200
    [row] = [row for row in response.context["breakers"] if row.name == name]
    return row


def test_the_page_lists_a_breaker_with_its_live_failures_before_any_transition(
    operator: Client, slow_reset: None
) -> None:
    breaker = failing(2)  # below the threshold of 3: closed, never transitioned

    row = listed(operator, breaker.name)

    assert (row.state, row.failures, row.opened_at) == (State.CLOSED, 2, None)
    assert not BreakerTransition.objects.filter(breaker=breaker.name).exists()
    assert f'data-name="{breaker.name}"' in operator.get(PAGE).content.decode()


def test_an_open_breaker_shows_when_it_opened_and_when_it_probes(
    operator: Client, slow_reset: None
) -> None:
    breaker = failing(3)

    row = listed(operator, breaker.name)

    assert row.state == State.OPEN
    assert row.opened_at is not None
    assert (row.next_probe_at - row.opened_at).total_seconds() == pytest.approx(600, abs=1)


def test_a_breaker_never_used_is_not_listed() -> None:
    assert f"page-{uuid.uuid4().hex[:8]}" not in known_breakers()


@pytest.mark.parametrize(
    ("action", "state"),
    [("force-open", State.FORCED_OPEN), ("force-closed", State.FORCED_CLOSED)],
)
def test_forcing_changes_the_live_state_and_audits_who_did_it(
    operator: Client, olivia: Any, slow_reset: None, action: str, state: State
) -> None:
    breaker = failing(1)

    response = operator.post(PAGE, {"name": breaker.name, "action": action, "notes": "deploy"})

    assert response.status_code == 302
    assert CircuitBreaker(breaker.name).snapshot().state == state
    [audit] = BreakerTransition.objects.filter(breaker=breaker.name)
    assert (audit.actor, audit.to_state, audit.reason) == (
        olivia,
        state,
        f"{action} from the console: deploy",
    )
    assert listed(operator, breaker.name).state == state


def test_resetting_closes_an_open_breaker_and_audits_it(
    operator: Client, olivia: Any, slow_reset: None
) -> None:
    breaker = failing(3)
    with pytest.raises(Unavailable):
        CircuitBreaker(breaker.name).acquire()

    operator.post(PAGE, {"name": breaker.name, "action": "reset"})

    assert CircuitBreaker(breaker.name).acquire().slot is None  # closed: calls go through
    row = listed(operator, breaker.name)
    assert (row.state, row.failures) == (State.CLOSED, 0)
    audit = BreakerTransition.objects.filter(breaker=breaker.name).first()
    assert audit is not None
    assert (audit.actor, audit.from_state, audit.to_state, audit.reason) == (
        olivia,
        "open",
        "closed",
        "reset from the console",
    )


def test_staff_without_the_permission_sees_the_page_but_cannot_change_a_breaker(
    sam: Client, slow_reset: None
) -> None:
    breaker = failing(3)

    page = sam.get(PAGE)
    refused = sam.post(PAGE, {"name": breaker.name, "action": "reset"})

    assert page.status_code == 200
    assert b"force-open</button>" not in page.content
    assert refused.status_code == 403
    assert CircuitBreaker(breaker.name).snapshot().state == State.OPEN
    assert not BreakerTransition.objects.filter(breaker=breaker.name, actor__isnull=False)


def test_only_staff_see_the_page() -> None:
    client = Client()
    client.force_login(get_user_model().objects.create_user("una"))

    response = client.get(PAGE)

    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_an_unknown_breaker_or_action_is_a_bad_request(operator: Client) -> None:
    breaker = failing(1)

    assert operator.post(PAGE, {"name": "nope", "action": "reset"}).status_code == 400
    assert operator.post(PAGE, {"name": breaker.name, "action": "melt"}).status_code == 400
