"""Idempotency keys: the same request sent twice has one effect and one response."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.resilience.models import IdempotencyRecord
from apps.resilience.taxonomy import InvalidInput

WINDOW = timedelta(hours=24)


class IdempotencyKeyReused(InvalidInput):
    """The key was used within the window for a request with a different body."""


class _KeyTaken(Exception):
    """A concurrent request inserted the same key first."""


@dataclass(frozen=True)
class Outcome:
    status: int
    body: Any
    replayed: bool


def request_hash(payload: Any) -> str:
    """Return a stable digest of a request body (key order does not matter)."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def run_once(
    *, user_id: int, scope: str, key: str, digest: str, command: Callable[[], tuple[int, Any]]
) -> Outcome:
    """Run ``command`` once per (user, scope, key) within 24 h; replay its response after.

    1. In one transaction, look for the key's record, locking it; a record younger than
       the window replays its response (or refuses a different body).
    2. Otherwise insert the record: a concurrent request with the same key blocks on the
       unique index until this transaction ends, then finds the record in step 1.
    3. Run the command in the same transaction and keep its response with the key. A
       command that fails rolls the record back, so the key can be used again.
    """
    for _ in range(2):
        try:
            with transaction.atomic():
                found = _replay(user_id, scope, key, digest)
                if found is not None:
                    return found
                try:
                    with transaction.atomic():
                        record = IdempotencyRecord.objects.create(
                            user_id=user_id, scope=scope, key=key, request_hash=digest
                        )
                except IntegrityError as exc:
                    raise _KeyTaken from exc
                status, body = command()
                record.status_code, record.body = status, body
                record.save(update_fields=["status_code", "body"])
                return Outcome(status, body, replayed=False)
        except _KeyTaken:
            continue  # another request with this key committed first: replay it
    raise AssertionError("unreachable: the second pass finds the committed record")


def _replay(user_id: int, scope: str, key: str, digest: str) -> Outcome | None:
    record = (
        IdempotencyRecord.objects.select_for_update()
        .filter(user_id=user_id, scope=scope, key=key)
        .first()
    )
    if record is None:
        return None
    if record.created_at < timezone.now() - WINDOW:
        record.delete()
        return None
    if record.request_hash != digest:
        raise IdempotencyKeyReused("this Idempotency-Key was used for a different request")
    return Outcome(record.status_code, record.body, replayed=True)
