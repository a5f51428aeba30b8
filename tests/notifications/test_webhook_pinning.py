"""A webhook is delivered to the address its check approved, never to a second DNS answer.

DNS rebinding: the attacker's name answers a public address to the check, then 127.0.0.1
to the connection. The network is simulated at its two edges only: the resolver (answers
the test scripts for one name) and the route to one public address (it leads to a real
local TLS server); the HTTP client, TLS and the servers are real.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from apps.notifications.channels import send_webhook
from apps.resilience.breakers import CircuitBreaker
from tests.notifications.conftest import Listener, a_notification
from tests.support.http import controlled_server
from tests.support.tls import Certificates, TlsServer, make_certificates, tls_server

NAME = "hooks.rebind.test"
PUBLIC = "93.184.215.14"  # any public address: the route below leads it to a local server
_real_getaddrinfo = socket.getaddrinfo
_real_create_connection = socket.create_connection


class Resolver:
    """DNS for ``NAME``: each lookup gets the next scripted answer (then the last again)."""

    def __init__(self, *answers: list[str]) -> None:
        self.answers = answers
        self.lookups = 0

    def __call__(self, host: Any, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        if host != NAME:
            return _real_getaddrinfo(host, port, *args, **kwargs)
        answer = self.answers[min(self.lookups, len(self.answers) - 1)]
        self.lookups += 1
        return [
            (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (ip, int(port)))
            for ip in answer
        ]


def route(public_to_port: int) -> Any:
    """Return a ``socket.create_connection`` on which ``PUBLIC`` leads to a local port.

    A name is looked up (in the scripted DNS) as the real one would, so no connection ever
    leaves the machine, whoever asks.
    """

    def create_connection(address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
        host, port = address[0], address[1]
        ip = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)[0][4][0]
        local = ("127.0.0.1", public_to_port) if ip == PUBLIC else (ip, port)
        return _real_create_connection(local, *args, **kwargs)

    return create_connection


@pytest.fixture
def breaker() -> Iterator[None]:
    CircuitBreaker(f"webhook:{NAME}").reset()
    yield
    CircuitBreaker(f"webhook:{NAME}").reset()


@pytest.fixture
def certificates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Certificates:
    """A certificate for ``NAME``, from a CA the HTTP client trusts in this test only."""
    made = make_certificates(tmp_path, NAME)
    monkeypatch.setenv("SSL_CERT_FILE", str(made.ca))
    return made


@pytest.fixture
def receiver(certificates: Certificates) -> Iterator[TlsServer]:
    """The user's real receiver: https, at the public address."""
    with tls_server(certificates) as server:
        yield server


@pytest.fixture
def internal() -> Iterator[Listener]:
    """A service on 127.0.0.1 that must never be reached: it counts every connection."""
    bare = Listener()
    try:
        yield bare
    finally:
        bare.close()


@pytest.mark.django_db
@pytest.mark.usefixtures("production", "breaker")
def test_a_name_rebound_to_127_0_0_1_after_the_check_is_still_delivered_to_the_checked_address(
    monkeypatch: pytest.MonkeyPatch, receiver: TlsServer, internal: Listener
) -> None:
    resolver = Resolver([PUBLIC], ["127.0.0.1"])  # public to the check, then rebound
    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    monkeypatch.setattr(socket, "create_connection", route(receiver.port))
    url = f"https://{NAME}:{internal.port}/hook"  # the internal service's port

    assert send_webhook(a_notification(), url, "s3cret") == url

    assert resolver.lookups == 1  # the check's: the connection asked no one again
    assert internal.connections() == 0
    [received] = receiver.received
    assert received.headers["Host"] == f"{NAME}:{internal.port}"
    assert received.path == "/hook"
    assert receiver.server_names == [NAME]  # TLS asked for the host name, not the address


@pytest.mark.django_db
@pytest.mark.usefixtures("production", "breaker")
def test_the_certificate_is_still_checked_against_the_host_name(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Pinning the address must not weaken TLS: a certificate for another name is refused."""
    other = make_certificates(tmp_path / "other", "other.test")
    monkeypatch.setenv("SSL_CERT_FILE", str(other.ca))  # trusted CA, but the wrong name
    monkeypatch.setattr(socket, "getaddrinfo", Resolver([PUBLIC]))
    with tls_server(other) as impostor:
        monkeypatch.setattr(socket, "create_connection", route(impostor.port))

        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            send_webhook(a_notification(), f"https://{NAME}/hook", "s3cret")

        assert impostor.count() == 0
        assert impostor.server_names == [NAME]


@pytest.mark.django_db
@pytest.mark.usefixtures("breaker")
def test_with_private_targets_allowed_the_next_checked_address_is_tried_when_one_refuses(
    monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    """Local use (WEBHOOK_ALLOW_PRIVATE) is pinned too, and a host with several addresses
    is still reached when its first address takes no connection."""
    settings.WEBHOOK_ALLOW_PRIVATE = True
    with controlled_server() as local:
        port = int(local.url.rsplit(":", 1)[1])
        resolver = Resolver(["127.0.0.2", "127.0.0.1"], ["127.0.0.3"])  # nothing on .2, .3
        monkeypatch.setattr(socket, "getaddrinfo", resolver)
        url = f"http://{NAME}:{port}/hook"

        send_webhook(a_notification(), url, "s3cret")

        [received] = local.received
        assert received.headers["Host"] == f"{NAME}:{port}"
        assert resolver.lookups == 1
