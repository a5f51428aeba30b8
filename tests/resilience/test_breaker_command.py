"""`manage.py breaker`: operators see and force breakers from the command line."""

from __future__ import annotations

import io
import uuid

import pytest
from django.core.management import CommandError, call_command

from apps.resilience.breakers import CircuitBreaker, State
from apps.resilience.models import BreakerTransition
from apps.resilience.taxonomy import Unavailable

pytestmark = pytest.mark.django_db


def _run(*args: str) -> str:
    out = io.StringIO()
    call_command("breaker", *args, stdout=out)
    return out.getvalue()


def test_forcing_open_holds_every_call_until_cleared() -> None:
    name = f"cmd-{uuid.uuid4().hex[:8]}"

    assert "forced_open" in _run("force-open", name, "--reason", "maintenance window")
    with pytest.raises(Unavailable):
        CircuitBreaker(name).acquire()
    assert "closed" in _run("clear", name)
    assert CircuitBreaker(name).acquire().slot is None

    reasons = list(BreakerTransition.objects.filter(breaker=name).values_list("to_state", "reason"))
    assert reasons == [("closed", "from the command line"), ("forced_open", "maintenance window")]


def test_listing_shows_every_breaker_that_ever_changed_state() -> None:
    name = f"cmd-{uuid.uuid4().hex[:8]}"
    CircuitBreaker(name).force(State.FORCED_CLOSED)

    assert f"{name}: forced_closed" in _run("list")
    assert f"{name}: forced_closed" in _run("show", name)


def test_listing_with_no_breakers_says_so() -> None:
    assert _run("list").strip() == "no breakers yet: one appears when it first changes state"


def test_list_is_an_action_not_a_breakers_name() -> None:
    name = f"cmd-{uuid.uuid4().hex[:8]}"
    CircuitBreaker(name).force(State.FORCED_OPEN)

    out = _run("list")

    assert f"{name}: forced_open" in out
    assert "list:" not in out


@pytest.mark.parametrize("args", [(), ("reset",), ("force-open",), ("bogus", "x")])
def test_an_action_and_a_name_are_required(args: tuple[str, ...]) -> None:
    with pytest.raises(CommandError):
        _run(*args)
