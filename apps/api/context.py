"""The command context of an API request: who acts, and which request it is."""

from __future__ import annotations

import uuid

from rest_framework.request import Request

from apps.eventstore.store import CommandContext


def context_of(request: Request) -> CommandContext:
    """Return the command context of an API request (actor and request id)."""
    request_id = request.headers.get("X-Request-ID", "")[:100] or uuid.uuid4().hex
    return CommandContext(actor_id=str(request.user.pk), request_id=request_id)
