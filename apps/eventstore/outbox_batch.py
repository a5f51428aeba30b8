"""Publishing an append's outbox rows once its transaction commits, one nudge per transaction.

``store.append_many`` hands each append's outbox ids to ``publish_after_commit``; the rows
of one transaction are gathered in a per-thread, per-database-alias batch keyed by the
transaction id, and handed to the relay together after commit.
"""

from __future__ import annotations

import threading

from django.db import connection, transaction

from apps.eventstore import relay

# This thread's outbox batch per database alias: Django gives each thread its own connection,
# so a thread's transactions are the only ones that can add to its batches.
_batches = threading.local()


def publish_after_commit(outbox_ids: list[int], transaction_id: int | None) -> None:
    """Nudge the relay once per transaction, with every outbox row it wrote.

    1. Add the ids to this thread's batch for the database, started afresh when the
       transaction id differs from the batch's: a transaction that rolled back never
       flushed its batch, and the next one must not inherit it.
    2. Register the batch's flush with ``on_commit``, once per append: a savepoint that
       rolls back discards the callbacks registered inside it, so the first append's
       callback may be gone while later appends' rows still need one. The first flush to
       run publishes the whole batch; the others find it empty.

    Ids appended inside a savepoint that rolled back stay in the batch, but their rows
    don't exist: the relay finds nothing to publish for them. Without a transaction id
    (SQLite) each append is a batch of its own.
    """
    batch = _batch_for(connection.alias, transaction_id)
    batch.ids.extend(outbox_ids)
    transaction.on_commit(batch.flush, using=connection.alias)


def _batch_for(alias: str, transaction_id: int | None) -> _OutboxBatch:
    """Return this thread's batch for the transaction on ``alias``, new if it has none."""
    if not hasattr(_batches, "by_alias"):
        _batches.by_alias = {}
    batch: _OutboxBatch | None = _batches.by_alias.get(alias)
    if batch is None or transaction_id is None or batch.transaction_id != transaction_id:
        batch = _batches.by_alias[alias] = _OutboxBatch(transaction_id)
    return batch


class _OutboxBatch:
    """The outbox ids one transaction wrote and has not yet handed to the relay."""

    def __init__(self, transaction_id: int | None) -> None:
        self.transaction_id = transaction_id
        self.ids: list[int] = []

    def flush(self) -> None:
        """Hand the ids collected so far to the relay, once."""
        ids, self.ids = self.ids, []
        if ids:
            relay.publish_after_commit(ids)
