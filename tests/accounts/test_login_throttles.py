"""Guessing passwords at the token endpoint: per username and per address, then 429.

Every attempt counts, right or wrong (see ``apps.accounts.throttles`` for why), and a
refused attempt never reaches the password check: after the limit even the right password
waits for the window to end.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.accounts.conftest import TOKEN_URL, anonymous, log_in, set_rates
from tests.support.api import Api
from tests.support.waiting import wait_until

pytestmark = pytest.mark.django_db


def assert_throttled(response: Any, longest: int) -> None:
    assert response.status_code == 429, response.content
    assert response.json()["error"]["code"] == "throttled"
    assert 1 <= int(response["Retry-After"]) <= longest


def test_guessing_one_username_is_refused_after_the_limit_even_with_the_right_password(
    alice: Api, bob: Api, settings: Any
) -> None:
    set_rates(settings, login_username="3/min", login_address="100/min")

    guesses = [log_in("alice", f"guess-{n}").status_code for n in range(3)]

    assert guesses == [400, 400, 400]
    assert_throttled(log_in("alice", "guess-4"), longest=60)
    assert_throttled(log_in("alice", "pw-alice-1"), longest=60)
    assert_throttled(log_in(" ALICE ", "pw-alice-1"), longest=60)  # one budget per name
    assert log_in("bob", "pw-bob-1").status_code == 200  # another username: its own budget


def test_once_the_window_ends_the_right_password_works_again(alice: Api, settings: Any) -> None:
    # One a second: the second try within a second of the first is refused, however slow
    # the password check is on this machine.
    set_rates(settings, login_username="1/sec", login_address="100/min")

    wait_until(lambda: log_in("alice", "a guess").status_code == 429, message="a refusal")

    # Tries made while the window lasts are refused (and counted) without moving its end.
    wait_until(
        lambda: log_in("alice", "pw-alice-1").status_code == 200,
        timeout=5,
        message="a token once the window ended",
    )


def test_many_usernames_from_one_address_are_limited_by_the_address_rate(
    alice: Api, bob: Api, settings: Any
) -> None:
    set_rates(settings, login_username="100/min", login_address="3/min")

    guesses = [log_in(name, "a guess").status_code for name in ("alice", "bob", "carol")]

    assert guesses == [400, 400, 400]
    assert_throttled(log_in("dave", "a guess"), longest=60)
    assert_throttled(log_in("bob", "pw-bob-1"), longest=60)
    assert log_in("bob", "pw-bob-1", address="10.0.0.7").status_code == 200


def test_the_admin_lockout_does_not_answer_for_the_token_endpoint(
    alice: Api, settings: Any
) -> None:
    settings.AXES_FAILURE_LIMIT = 2  # below the endpoint's own limit (10 per username)

    guesses = [log_in("alice", f"guess-{n}").status_code for n in range(3)]

    assert guesses == [400, 400, 400]  # not axes's refusal: the password was checked
    assert log_in("alice", "pw-alice-1").status_code == 200


def test_a_forged_forwarded_for_header_does_not_buy_a_new_address(
    alice: Api, bob: Api, settings: Any
) -> None:
    """With no trusted proxy (the default), X-Forwarded-For is the client's own word."""
    set_rates(settings, login_username="100/min", login_address="3/min")
    client = anonymous("127.0.0.1")

    def attempt(n: int) -> int:
        body = {"username": "alice", "password": f"guess-{n}"}
        forged = {"HTTP_X_FORWARDED_FOR": f"203.0.113.{n}"}
        return client.post(TOKEN_URL, body, format="json", **forged).status_code

    assert [attempt(n) for n in range(4)] == [400, 400, 400, 429]
