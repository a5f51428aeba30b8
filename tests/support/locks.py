"""Who waits for a lock, in this test's database only."""

from __future__ import annotations

from django.db import connection


def someone_waits(locktype: str) -> bool:
    """Return whether a session of this database waits for a lock of ``locktype``
    (``advisory``, ``transactionid``, ...). pg_locks shows the whole server: waiters of
    another database (a parallel worker's, another suite run beside this one) don't count."""
    with connection.cursor() as cursor:
        # pg_stat_activity is read once per transaction unless its snapshot is cleared:
        # a caller inside a transaction would never see a session that came later.
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE l.locktype = %s AND NOT l.granted AND a.datname = current_database())",
            [locktype],
        )
        return bool(cursor.fetchone()[0])
