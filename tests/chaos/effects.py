"""Where the chaos handler (``tests.chaos.handlers``) records its effects, for the harness to
count them; no subscription here, so counting never registers the handler itself."""

from __future__ import annotations

import uuid

NAME = "chaos.slow-effect"
EFFECT_STREAM_TYPE = "chaos.effect"
_EFFECTS = uuid.UUID("0d7c6a52-2f51-4c39-9a7e-5b7d0c6c1e21")


def effect_stream(event_id: uuid.UUID) -> uuid.UUID:
    """Return the id of the stream holding the handler's effects for ``event_id``."""
    return uuid.uuid5(_EFFECTS, str(event_id))
