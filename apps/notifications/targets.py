"""Where a notification went, as its owner sees it: enough to recognise, nothing to leak.

A webhook shows its host (and a port other than the scheme's): never the path or query,
which may carry a token, nor credentials. An email address shows its first character and
its domain (``a***@example.com``).
"""

from __future__ import annotations

from urllib.parse import urlsplit

_DEFAULT_PORTS = {"http": 80, "https": 443}


def shown(channel: str, address: str) -> str:
    """Return how ``address`` on ``channel`` is shown to its owner ("" when there is none)."""
    if not address:
        return ""
    return masked_email(address) if channel == "email" else webhook_host(address)


def as_recorded(channel: str, target: str) -> str:
    """Return the target of a ``notification.sent`` event as shown: events recorded before
    targets were shown hold the full address or URL (a URL has a scheme; a shown webhook
    target is a bare host, and masking a masked address changes nothing)."""
    if channel == "webhook" and "://" not in target:
        return target
    return shown(channel, target)


def masked_email(address: str) -> str:
    """Return ``address`` with its local part masked but for its first character."""
    local, at, domain = address.rpartition("@")
    if not at:
        return "***"
    return f"{local[:1]}***@{domain}"


def webhook_host(url: str) -> str:
    """Return the host of ``url``, with its port when not the scheme's default; "" if none."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port
    except ValueError:  # a URL that never passed the checks: show nothing rather than it
        return ""
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    if port is not None and port != _DEFAULT_PORTS.get(parts.scheme):
        return f"{host}:{port}"
    return host
