"""How a notification's target is shown to its owner: a webhook's host, a masked address."""

from __future__ import annotations

import pytest

from apps.notifications.targets import shown


@pytest.mark.parametrize(
    ("channel", "address", "expected"),
    [
        ("email", "alice@example.com", "a***@example.com"),
        ("email", "a@example.com", "a***@example.com"),
        ("email", '"odd@local"@example.com', '"***@example.com'),
        ("email", "", ""),
        ("webhook", "https://hooks.example.com/a/b?token=s3cret", "hooks.example.com"),
        ("webhook", "https://user:pw@hooks.example.com:443/x", "hooks.example.com"),
        ("webhook", "https://hooks.example.com:8443/x#frag", "hooks.example.com:8443"),
        ("webhook", "http://127.0.0.1:9/hook", "127.0.0.1:9"),
        ("webhook", "https://[2001:db8::1]/x", "[2001:db8::1]"),
        ("webhook", "https://host:notaport/x", ""),
        ("webhook", "", ""),
    ],
)
def test_a_target_shows_only_what_identifies_it(channel: str, address: str, expected: str) -> None:
    assert shown(channel, address) == expected
