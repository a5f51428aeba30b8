"""The chaos harness: a fresh database and Redis db, the real processes, faults, a count.

1. Create ``backstop_chaos_<pid>`` and flush Redis db 15; migrate; create the API user.
2. Start gunicorn, two single-process workers and beat (``processes.Cluster``).
3. Per scenario: send commands through the API while injecting faults, drain (outbox
   published, ledger terminal, queues empty, sagas and due reminders at an end), count
   (``accounting``), and give a verdict.
4. Print the table, write ``results/latest.json``; stop every process; drop the database.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import redis

from tests.chaos.processes import ROOT, Cluster

RESULTS = Path(__file__).resolve().parent / "results"
ADMIN_DATABASE_URL = os.environ.get(
    "CHAOS_ADMIN_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("CHAOS_REDIS_URL", "redis://127.0.0.1:6379/15")
# Small timings, so the reconciler, sweeps and retries act within a QUICK run.
TIMINGS = {
    "LEDGER_QUEUED_SECONDS": "10",
    "LEDGER_RECONCILE_SECONDS": "2",
    "LEDGER_MARGIN_SECONDS": "5",
    "LEDGER_MAX_BROKER_COUNTDOWN": "5",
    "RESILIENCE_HANDLER_SOFT_TIME_LIMIT": "10",
    "RESILIENCE_HANDLER_TIME_LIMIT": "15",
    "RESILIENCE_DELAY_SCALE": "0.05",
    "OUTBOX_SWEEP_SECONDS": "2",
    "OUTBOX_SWEEP_GRACE_SECONDS": "1",
    "REMINDER_SWEEP_SECONDS": "2",
    "SAGA_SWEEP_SECONDS": "5",
    "HEARTBEAT_SECONDS": "5",
    "API_USER_RATE": "100000/min",
}
# The reconciler re-sends a pair that made no progress within this long (a running pair:
# its hard time limit plus the margin), checked every LEDGER_RECONCILE_SECONDS.
RECONCILER_THRESHOLD = 15 + 5 + 2


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos")
    parser.add_argument("--quick", action="store_true", help="every scenario at 1/10 size")
    parser.add_argument("--seed", type=int, default=int(time.time()))
    args = parser.parse_args(argv)
    RESULTS.mkdir(exist_ok=True)
    name = f"backstop_chaos_{os.getpid()}"
    env = _environment(name)
    _create_database(name)
    cluster: Cluster | None = None
    try:
        _setup_django(env)
        logging.getLogger("httpx").setLevel(logging.WARNING)
        token = _prepare(env)
        cluster = Cluster(env, RESULTS, _free_port())
        cluster.start()
        from tests.chaos.scenarios import worker_kills

        rows = [worker_kills.run(cluster, token, quick=args.quick, seed=args.seed)]
    finally:
        if cluster is not None:
            cluster.stop()
        if os.environ.get("CHAOS_KEEP_DB"):
            print(f"kept database {name} (CHAOS_KEEP_DB)")
        else:
            _drop_database(name)
    _write(rows, quick=args.quick)
    return 0 if all(r["verdict"] == "pass" for r in rows) else 1


def _environment(name: str) -> dict[str, str]:
    base = ADMIN_DATABASE_URL.rsplit("/", 1)[0]
    env = dict(os.environ)
    for inherited in ("DJANGO_SETTINGS_MODULE", "EVENTSTORE_EXTRA_HANDLER_MODULES"):
        env.pop(inherited, None)
    env.update(TIMINGS)
    env.update(
        DEBUG="1",
        DATABASE_URL=f"{base}/{name}",
        REDIS_URL=REDIS_URL,
        CELERY_BROKER_URL=REDIS_URL,
        EVENTSTORE_EXTRA_HANDLER_MODULES="tests.chaos.handlers",
        PYTHONPATH=str(ROOT),
        LOG_FORMAT="text",
        EMAIL_BACKEND="django.core.mail.backends.filebased.EmailBackend",
        EMAIL_FILE_PATH=str(RESULTS / "mail"),
    )
    return env


def _create_database(name: str) -> None:
    with psycopg.connect(ADMIN_DATABASE_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    redis.Redis.from_url(REDIS_URL).flushdb()


def _drop_database(name: str) -> None:
    from django.db import connections

    connections.close_all()
    with psycopg.connect(ADMIN_DATABASE_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _setup_django(env: dict[str, str]) -> None:
    """Set Django up in this process against the chaos database (for the accounting)."""
    os.environ.update({k: v for k, v in env.items() if k not in os.environ or k in _OURS})
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    import django

    django.setup()


_OURS = {
    "DEBUG",
    "DATABASE_URL",
    "REDIS_URL",
    "CELERY_BROKER_URL",
    "EVENTSTORE_EXTRA_HANDLER_MODULES",
    "LOG_FORMAT",
    "EMAIL_BACKEND",
    "EMAIL_FILE_PATH",
    *TIMINGS,
}


def _prepare(env: dict[str, str]) -> str:
    """Migrate the chaos database; return an API token of a user with an email address."""
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from knox.models import AuthToken

    call_command("migrate", "--noinput", verbosity=0)
    user = get_user_model().objects.create_user(
        "chaos", email="chaos@example.com", password=os.urandom(16).hex()
    )
    return AuthToken.objects.create(user)[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


COLUMNS = [
    "scenario",
    "commands",
    "events",
    "handler_runs",
    "retries",
    "dead_letters",
    "lost",
    "duplicated",
    "drain_seconds",
    "verdict",
]


def _write(rows: list[dict[str, Any]], *, quick: bool) -> None:
    """Print the table and write results/latest.json in the issue's format."""
    widths = [max(len(c), *(len(str(r[c])) for r in rows)) for c in COLUMNS]
    print(" | ".join(c.ljust(w) for c, w in zip(COLUMNS, widths, strict=True)))
    print("-+-".join("-" * w for w in widths))
    for row in rows:
        print(" | ".join(str(row[c]).ljust(w) for c, w in zip(COLUMNS, widths, strict=True)))
    document = {"scenarios": [{c: r[c] for c in COLUMNS} for r in rows], "quick": quick}
    (RESULTS / "latest.json").write_text(json.dumps(document, indent=2) + "\n")
    sys.stdout.flush()
