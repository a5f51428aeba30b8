"""Webhook targets: only public https URLs (no server-side request forgery), signed bodies."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import socket
from urllib.parse import urlsplit

from django.conf import settings

from apps.resilience.taxonomy import InvalidInput, SecurityViolation


def check_url(url: str) -> str:
    """Return the URL's host if Backstop may call it, else raise (checked again at delivery).

    Without ``WEBHOOK_ALLOW_PRIVATE`` the URL must be https and every address its host
    resolves to must be public: no loopback, private, link-local or reserved address.
    """
    parts = urlsplit(url)
    allow_private = settings.WEBHOOK_ALLOW_PRIVATE
    if parts.scheme not in (("https", "http") if allow_private else ("https",)):
        raise InvalidInput("the webhook URL must use https")
    if not parts.hostname:
        raise InvalidInput("the webhook URL has no host")
    if parts.username or parts.password:
        raise InvalidInput("the webhook URL must not carry credentials")
    if not allow_private:
        for address in _addresses(parts.hostname, parts.port or 443):
            if not address.is_global or address.is_multicast:
                raise SecurityViolation(
                    f"the webhook host {parts.hostname} resolves to a non-public address"
                )
    return parts.hostname


def _addresses(host: str, port: int) -> set[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        raise InvalidInput(f"the webhook host {host} does not resolve") from exc
    return {ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos}


def sign(body: bytes, secret: str) -> str:
    """Return the X-Backstop-Signature value of ``body``: ``sha256=<hex HMAC>``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
