"""The chaos harness: a fresh database and Redis db, the real processes, faults, a count.

1. Create ``backstop_chaos_<pid>``; migrate; create the API user and the operator.
2. Per scenario: clone that database (``backstop_chaos_<pid>_<n>``, so each scenario counts
   only its own work), flush Redis db 15, start gunicorn, two single-process workers and
   beat (``processes.Cluster``) with the scenario's extra environment (``ENV``); send
   commands through the API while injecting faults, drain (outbox published, ledger
   terminal, queues empty, sagas and due reminders at an end), count (``accounting``),
   give a verdict; stop the processes and drop the clone.
3. Print the table, write ``results/latest.json``; drop the database.
"""

from __future__ import annotations

import argparse
import importlib
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
from tests.chaos.scenarios.common import Users

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


SCENARIOS = ("worker_kills", "duplicate_delivery", "poison_mix")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos")
    parser.add_argument("--quick", action="store_true", help="every scenario at 1/10 size")
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--only", choices=SCENARIOS, action="append", help="run only these")
    args = parser.parse_args(argv)
    RESULTS.mkdir(exist_ok=True)
    template = f"backstop_chaos_{os.getpid()}"
    _create_database(template)
    rows: list[dict[str, Any]] = []
    try:
        _setup_django(_environment(template))
        logging.getLogger("httpx").setLevel(logging.WARNING)
        users = _prepare()
        for number, module in enumerate(args.only or SCENARIOS, start=1):
            scenario = importlib.import_module(f"tests.chaos.scenarios.{module}")
            print(f"--- {scenario.NAME} (seed {args.seed})", flush=True)
            rows.append(_run(scenario, template, number, users, args))
    finally:
        _drop_database(template)
    _write(rows, quick=args.quick)
    return 0 if all(r["verdict"] == "pass" for r in rows) else 1


def _run(
    scenario: Any, template: str, number: int, users: Users, args: argparse.Namespace
) -> dict[str, Any]:
    """Run one scenario against its own clone of the migrated database; return its row."""
    name = f"{template}_{number}"
    _create_database(name, template=template)
    _use_database(name)
    for old in RESULTS.glob(f"{scenario.NAME}-*.log"):
        old.unlink()
    env = {**_environment(name), **scenario.ENV}
    cluster = Cluster(env, RESULTS, _free_port(), prefix=f"{scenario.NAME}-")
    try:
        cluster.start()
        result: dict[str, Any] = scenario.run(cluster, users, quick=args.quick, seed=args.seed)
        return result
    finally:
        cluster.stop()
        _drop_database(name)


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


def _create_database(name: str, template: str | None = None) -> None:
    """Create ``name`` (a copy of ``template``, when given); flush the chaos Redis db."""
    from_template = f' TEMPLATE "{template}"' if template else ""
    with psycopg.connect(ADMIN_DATABASE_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"{from_template}')
    redis.Redis.from_url(REDIS_URL).flushdb()


def _use_database(name: str) -> None:
    """Point this process's Django connection (the accounting's) at database ``name``."""
    from django.db import connections

    connections.close_all()
    connections["default"].settings_dict["NAME"] = name


def _drop_database(name: str) -> None:
    from django.db import connections

    if os.environ.get("CHAOS_KEEP_DB"):
        print(f"kept database {name} (CHAOS_KEEP_DB)")
        return
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


def _prepare() -> Users:
    """Migrate the chaos database; return API tokens of a user with an email address and of
    a staff operator (the "operator" group, as the console's operators are)."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.core.management import call_command
    from django.db import connections
    from knox.models import AuthToken

    call_command("migrate", "--noinput", verbosity=0)
    model = get_user_model()
    user = model.objects.create_user(
        "chaos", email="chaos@example.com", password=os.urandom(16).hex()
    )
    operator = model.objects.create_user(
        "chaos-operator", email="operator@example.com", password=os.urandom(16).hex()
    )
    operator.is_staff = True
    operator.save(update_fields=["is_staff"])
    operator.groups.add(Group.objects.get(name="operator"))
    users = Users(AuthToken.objects.create(user)[1], AuthToken.objects.create(operator)[1])
    connections.close_all()  # the template of every scenario's database: no session may hold it
    return users


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
