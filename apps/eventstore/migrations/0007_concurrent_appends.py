"""Appends run side by side; readers wait for the ones in flight instead.

``eventstore_append`` now takes the append lock *shared*: appends no longer queue on each
other through their commits (their WAL flushes can be shared); only appends to the same
stream wait for each other, on a lock of that stream (class 1651733611, 'bstk').
``read_all`` stays gap-free through ``eventstore_committed_position(lock_key)``: it takes
the same lock *exclusively* in a subtransaction (it waits for the appends in flight to
end, and holds new ones back meanwhile), reads the highest committed position and rolls
the subtransaction back, which releases the lock. Every position at or below it that will
ever commit has committed; the reader reads no further. A rebuild's switch still takes the
lock exclusively for its whole transaction (``take_append_lock``).
"""

from __future__ import annotations

import importlib

from django.db import migrations

previous = importlib.import_module("apps.eventstore.migrations.0005_append_function")

# Appends to one stream still wait for each other: the second then finds the first's
# version and fails with VERSION_MISMATCH naming it, not with a bare unique violation.
# One call takes its streams' locks in the order of their lock keys. A transaction that
# appends in several calls holds each call's locks to the end: two such transactions
# touching the same streams in opposite orders deadlock, and PostgreSQL aborts one of them
# (a transient error: a handler is retried, a request answered 503).
STREAM_LOCKS = """PERFORM pg_advisory_xact_lock_shared(p_lock_key);
        PERFORM pg_advisory_xact_lock(1651733611, k.key)
           FROM (SELECT DISTINCT hashtext(x.stream_id::text) AS key
                   FROM jsonb_to_recordset(p_streams) AS x(stream_id uuid)
                  ORDER BY 1) k;"""
SHARED_APPEND = previous.POSTGRES_CREATE.replace(
    "PERFORM pg_advisory_xact_lock(p_lock_key);", STREAM_LOCKS
).replace(
    "recorded := clock_timestamp();  -- after the lock: recorded_at rises with position",
    "recorded := clock_timestamp();",
)
assert SHARED_APPEND != previous.POSTGRES_CREATE

COMMITTED_POSITION = """
CREATE OR REPLACE FUNCTION eventstore_committed_position(p_lock_key bigint)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    last bigint;
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        -- An older snapshot would miss events committed while the lock was awaited.
        RAISE EXCEPTION 'the log is read gap-free only at READ COMMITTED, not %',
            current_setting('transaction_isolation') USING ERRCODE = 'BSR02';
    END IF;
    IF p_lock_key IS NULL THEN
        SELECT max(e.position) INTO last FROM eventstore_event e;
        RETURN coalesce(last, 0);
    END IF;
    -- The lock is taken in a block that always ends in an error, whose rollback releases
    -- it whatever happens (a cancel included); the position read survives in ``last``.
    -- A transaction that has appended holds the lock shared and may take it exclusively
    -- (it reads its own events too); two doing so at once deadlock, and PostgreSQL aborts
    -- one of them.
    BEGIN
        PERFORM pg_advisory_xact_lock(p_lock_key);
        SELECT max(e.position) INTO last FROM eventstore_event e;
        RAISE EXCEPTION 'release the append lock' USING ERRCODE = 'BSR01';
    EXCEPTION WHEN SQLSTATE 'BSR01' THEN
        NULL;
    END;
    RETURN coalesce(last, 0);
END;
$$;
"""
DROP_COMMITTED_POSITION = "DROP FUNCTION IF EXISTS eventstore_committed_position(bigint);"


class Migration(migrations.Migration):
    dependencies = [("eventstore", "0006_event_correlation_index")]

    operations = [
        migrations.RunPython(
            previous._postgres_only(SHARED_APPEND + COMMITTED_POSITION),
            previous._postgres_only(previous.POSTGRES_CREATE + DROP_COMMITTED_POSITION),
        ),
    ]
