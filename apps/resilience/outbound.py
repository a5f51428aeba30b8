"""Outbound calls held back during a dry run: adapters ask ``capturing()`` before sending
and, when it answers with a list, append what they would have sent to it instead."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from django.core.mail import EmailMessage, get_connection
from django.core.mail.backends.base import BaseEmailBackend

_captured: ContextVar[list[dict[str, Any]] | None] = ContextVar("outbound_capture", default=None)


def capturing() -> list[dict[str, Any]] | None:
    """Return the list collecting held-back calls, or None when calls go out for real."""
    return _captured.get()


@contextmanager
def held_back() -> Iterator[list[dict[str, Any]]]:
    """Hold back (and collect) outbound calls made in this context, for its duration."""
    calls: list[dict[str, Any]] = []
    token = _captured.set(calls)
    try:
        yield calls
    finally:
        _captured.reset(token)


class HeldBackEmailBackend(BaseEmailBackend):
    """Django email backend of a dry run: lists the messages of a held-back context and
    sends any other (another thread's, while the setting is swapped) with ``real_backend``."""

    real_backend = "django.core.mail.backends.smtp.EmailBackend"

    def send_messages(self, email_messages: Sequence[EmailMessage]) -> int:
        calls = capturing()
        if calls is None:
            return get_connection(self.real_backend).send_messages(email_messages)
        for message in email_messages:
            calls.append(
                {
                    "channel": "email",
                    "to": list(message.recipients()),
                    "subject": str(message.subject),
                    "body": str(message.body),
                }
            )
        return len(email_messages)
