"""Edit a dead letter's payload and retry it: validated against the event's schema first."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from apps.eventstore.models import Event
from apps.eventstore.registry import decode
from apps.resilience.models import DeadLetter, DeadLetterAction
from apps.resilience.services import dead_letters


class InvalidPayload(Exception):
    """The edited payload does not fit the event's schema: nothing is stored."""


def validate(letter: DeadLetter, payload: Any) -> None:
    """Raise ``InvalidPayload`` unless ``payload`` decodes as the letter's event (its type at
    the stored schema version, upcast as the runtime would) — the check the replay makes."""
    if letter.event_id is None:
        raise InvalidPayload("the dead letter has no event to edit")
    row = Event.objects.filter(event_id=letter.event_id).values("type", "schema_version").first()
    if row is None:
        raise InvalidPayload("the dead letter has no stored event to edit")
    try:
        decode(row["type"], row["schema_version"], payload)
    except Exception as exc:  # decode's errors (unknown type, invalid, newer version) alike
        raise InvalidPayload(str(exc)) from exc


def edit_and_retry(dead_letter_id: int, *, actor: Any, payload: Any) -> DeadLetter:
    """Store ``payload`` as the letter's edited payload (the original stays in ``payload``),
    audit the change with its diff, and retry the letter; all or nothing."""
    with transaction.atomic():
        letter = DeadLetter.objects.select_for_update().get(pk=dead_letter_id)
        if letter.status != DeadLetter.Status.PENDING:
            raise dead_letters.DeadLetterStateError(
                f"dead letter #{letter.pk} is {letter.status}, not pending"
            )
        validate(letter, payload)
        before = letter.edited_payload if letter.edited_payload is not None else letter.payload
        letter.edited_payload = payload
        letter.save(update_fields=["edited_payload"])
        DeadLetterAction.objects.create(
            dead_letter=letter,
            action=DeadLetterAction.Action.EDIT_PAYLOAD,
            actor=actor,
            details={"diff": diff(before, payload)},
        )
        return dead_letters.retry(letter.pk, actor=actor)


def diff(before: Any, after: Any) -> dict[str, Any]:
    """Return the top-level keys that changed: ``{key: [before, after]}`` (None: absent)."""
    if not isinstance(before, dict) or not isinstance(after, dict):
        return {"": [before, after]} if before != after else {}
    keys = sorted(set(before) | set(after))
    return {
        key: [before.get(key), after.get(key)] for key in keys if before.get(key) != after.get(key)
    }
