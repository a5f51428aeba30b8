"""Where the chaos handlers (``tests.chaos.handlers``) record their effects, and which faults
the poison handler injects, for the harness to count them; no subscription here, so counting
never registers the handlers themselves."""

from __future__ import annotations

import re
import uuid

NAME = "chaos.slow-effect"
POISON = "chaos.poison-mix"
# Every chaos handler that records one effect per event it handles.
EFFECT_HANDLERS = (NAME, POISON)
EFFECT_STREAM_TYPE = "chaos.effect"
_EFFECTS = uuid.UUID("0d7c6a52-2f51-4c39-9a7e-5b7d0c6c1e21")

# The poison handler's faults, chosen by the client in the todo's title (`fault:<kind>`),
# and the Redis keys it shares with the harness (the chaos Redis db, flushed per scenario).
PERMANENT, TRANSIENT, KILL = "permanent", "transient", "kill"
FAULTS = (PERMANENT, TRANSIENT, KILL)
TRANSIENT_FAILURES = 3  # a transient fault fails this many runs, then succeeds
FAULTS_ON_KEY = "chaos:faults-on"  # the faults are injected only while this key exists
KILLS_KEY = "chaos:kills"
HEALED_KEY = "chaos:healed"  # events (ids) the poison handler injects no fault into
_FAULT = re.compile(r"\bfault:(\w+)")


def effect_stream(event_id: uuid.UUID, handler: str = NAME) -> uuid.UUID:
    """Return the id of the stream holding ``handler``'s effects for ``event_id``."""
    name = str(event_id) if handler == NAME else f"{handler}:{event_id}"
    return uuid.uuid5(_EFFECTS, name)


def fault_of(title: str) -> str | None:
    """Return the fault a todo's title asks the poison handler for, if any."""
    found = _FAULT.search(title)
    return found.group(1) if found and found.group(1) in FAULTS else None


def attempts_key(event_id: uuid.UUID | str) -> str:
    """Return the Redis key counting the poison handler's runs of a transient fault."""
    return f"chaos:attempts:{event_id}"
