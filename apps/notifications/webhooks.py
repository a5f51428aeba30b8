"""Webhook targets: only public https URLs (no server-side request forgery), signed bodies.

A URL is checked by resolving its host and checking every address, and the request then
goes to one of those very addresses (``post``): the host is never resolved a second time,
so a DNS answer that changes between the check and the connection (DNS rebinding) can't
take the request elsewhere. TLS is still verified against the URL's host name.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import socket
import ssl
from dataclasses import dataclass

import httpx
from django.conf import settings

from apps.resilience import outbound
from apps.resilience.taxonomy import InvalidInput, SecurityViolation, TransientError

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
# Tried in turn when a host has several addresses, each within the connect timeout.
MAX_ADDRESSES = 3
_DEFAULT_PORTS = {"http": 80, "https": 443}
# IPv6 forms that carry an IPv4 address, which is what they reach: IPv4-compatible (::/96,
# deprecated), IPv4-translated (::ffff:0:0:0/96, SIIT), NAT64 (64:ff9b::/96); IPv4-mapped
# and 6to4 (2002::/16) have their own properties. The local-use NAT64 prefix
# 64:ff9b:1::/48 is not globally reachable at all.
_IPV4_IN_LOW_BITS = tuple(
    ipaddress.ip_network(prefix) for prefix in ("::/96", "::ffff:0:0:0/96", "64:ff9b::/96")
)
_LOCAL_NAT64 = ipaddress.ip_network("64:ff9b:1::/48")


class UnacceptableUrl(InvalidInput):
    """The webhook URL itself is unusable: malformed, another scheme, or with credentials."""


class HostDoesNotResolve(TransientError):
    """The webhook host has no address now: at delivery, perhaps it will again later."""


@dataclass(frozen=True)
class Target:
    """A checked webhook URL and the addresses its host resolved to: the only ones to call."""

    url: httpx.URL
    host: str  # as in the URL (IDNA-encoded): for the Host header, TLS and the breaker
    addresses: tuple[Address, ...]


def check_url(url: str) -> Target:
    """Return the URL's target if Backstop may call it, else raise (checked again at delivery).

    A malformed URL, another scheme or credentials are ``UnacceptableUrl`` (invalid input); a
    host that does not resolve is ``HostDoesNotResolve`` (transient: retried at delivery).
    Without ``WEBHOOK_ALLOW_PRIVATE`` the URL must be https and every address of its host
    public (``SecurityViolation`` otherwise). Never a bare ``ValueError``.
    """
    parsed = _parse(url)
    host = parsed.raw_host.decode("ascii")
    addresses = _addresses(host, parsed.port or _DEFAULT_PORTS[parsed.scheme])
    if not settings.WEBHOOK_ALLOW_PRIVATE and not all(map(is_public, addresses)):
        raise SecurityViolation(f"the webhook host {host} resolves to a non-public address")
    return Target(url=parsed, host=host, addresses=addresses)


def is_public(address: Address) -> bool:
    """Return whether ``address`` is one Backstop may call: globally reachable, not multicast,
    and, for an IPv6 address that carries an IPv4 one, that IPv4 address is public."""
    if isinstance(address, ipaddress.IPv6Address):
        if address in _LOCAL_NAT64:
            return False
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            return is_public(embedded)
    return address.is_global and not address.is_multicast


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if any(address in network for network in _IPV4_IN_LOW_BITS):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _parse(url: str) -> httpx.URL:
    """Return ``url`` parsed by the HTTP client itself (one parser: nothing to disagree on)."""
    allowed = ("https", "http") if settings.WEBHOOK_ALLOW_PRIVATE else ("https",)
    try:
        parsed = httpx.URL(url)
        port = parsed.port
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise UnacceptableUrl(
            "the webhook URL is not a valid URL (check its host and port)"
        ) from exc
    if parsed.scheme not in allowed:
        raise UnacceptableUrl(
            "the webhook URL must use https"
            if allowed == ("https",)
            else "the webhook URL must be an http or https URL"
        )
    if not parsed.raw_host:
        raise UnacceptableUrl("the webhook URL has no host")
    if port is not None and not 1 <= port <= 65535:
        raise UnacceptableUrl("the webhook URL's port must be a number from 1 to 65535")
    if parsed.userinfo:
        raise UnacceptableUrl("the webhook URL must not carry credentials")
    return parsed


def _addresses(host: str, port: int) -> tuple[Address, ...]:
    """Return the host's addresses in the resolver's order of preference."""
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError) as exc:  # socket.gaierror is an OSError
        raise HostDoesNotResolve(f"the webhook host {host} does not resolve") from exc
    found = (ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos)
    return tuple(dict.fromkeys(found))


def post(
    target: Target, *, content: bytes, headers: dict[str, str], timeout: httpx.Timeout
) -> httpx.Response:
    """POST ``content`` to the target at one of its checked addresses, the first of them that
    takes the connection; raise the last connection error if none does.

    The request names the URL's host (Host header, TLS SNI), and the certificate is verified
    against it; the environment's proxies and .netrc are not used (they would resolve the
    host or add credentials of their own), nor are redirects followed.
    """
    held_back = outbound.capturing()
    if held_back is not None:  # a dry run: listed, not sent
        held_back.append({"channel": "webhook", "url": str(target.url), "body": content.decode()})
        return httpx.Response(202, request=httpx.Request("POST", target.url))
    sni = {"sni_hostname": target.host} if target.url.scheme == "https" else {}
    headers = {**headers, "Host": target.url.netloc.decode("ascii")}
    failure: httpx.TransportError | None = None
    with httpx.Client(verify=_tls(), trust_env=False, timeout=timeout) as client:
        for address in target.addresses[:MAX_ADDRESSES]:
            pinned = target.url.copy_with(host=str(address))
            try:
                return client.post(pinned, content=content, headers=headers, extensions=sni)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                failure = exc  # nothing was sent: the next address may answer
    assert failure is not None  # check_url returns at least one address
    raise failure


def _tls() -> ssl.SSLContext:
    """Return the client's TLS context: certifi's roots, or SSL_CERT_FILE / SSL_CERT_DIR."""
    return httpx.create_ssl_context(trust_env=True)


def sign(body: bytes, secret: str) -> str:
    """Return the X-Backstop-Signature value of ``body``: ``sha256=<hex HMAC>``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
