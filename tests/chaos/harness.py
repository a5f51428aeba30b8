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
import itertools
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import redis

from tests.chaos import load, rabbitmq
from tests.chaos.processes import ROOT, Cluster
from tests.chaos.scenarios.common import Users

# Where the table (latest.json), the processes' logs and the mail go; `make test` points its
# QUICK run elsewhere (CHAOS_RESULTS=var/chaos), leaving the committed full run's file alone.
RESULTS = Path(
    os.environ.get("CHAOS_RESULTS") or Path(__file__).resolve().parent / "results"
).resolve()
ADMIN_DATABASE_URL = os.environ.get(
    "CHAOS_ADMIN_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("CHAOS_REDIS_URL", "redis://127.0.0.1:6379/15")
# The Celery broker of this run: REDIS_URL, or a RabbitMQ virtual host of the scenario's own.
BROKER_URL = REDIS_URL
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
# A scenario's child running longer than this is stopped, and its row fails.
CHILD_LIMIT_QUICK, CHILD_LIMIT = 10 * 60.0, 45 * 60.0


@dataclass(frozen=True)
class Job:
    """One scenario to run on one broker, in a child process."""

    number: int  # the issue's: the order of the table
    module: str  # in tests/chaos/scenarios
    alone: bool  # ``ALONE = True``: it measures throughput, which a neighbour would skew
    broker: str = "redis"  # or "rabbitmq", for a module with ``RABBITMQ = True``
    # ``ALONE = "full"``: alone at full size only (its load needs both cores to drain)
    alone_full: bool = False
    # ``FULL_MINUTES = <n>``: about how long its full size runs; the longest start first
    full_minutes: int = 0

    def runs_alone(self, quick: bool) -> bool:
        return self.alone or (self.alone_full and not quick)

    @property
    def key(self) -> str:
        return self.module if self.broker == "redis" else f"{self.module}-{self.broker}"


def scenarios() -> list[Job]:
    """Return a job per scenario module (``tests/chaos/scenarios/*.py`` with a ``NUMBER =
    <n>`` line) and broker, in the issue's order. Read from the source: a scenario imports
    Django models, which only load once Django is set up."""
    found: list[Job] = []
    for path in (Path(__file__).resolve().parent / "scenarios").glob("*.py"):
        source = path.read_text()
        number = re.search(r"^NUMBER = (\d+)$", source, re.MULTILINE)
        if number:
            alone = re.search(r"^ALONE = True\b", source, re.MULTILINE) is not None
            full = re.search(r'^ALONE = "full"', source, re.MULTILINE) is not None
            minutes = re.search(r"^FULL_MINUTES = (\d+)\b", source, re.MULTILINE)
            n, more = int(number.group(1)), int(minutes.group(1)) if minutes else 0
            found.append(Job(n, path.stem, alone, alone_full=full, full_minutes=more))
            if re.search(r"^RABBITMQ = True\b", source, re.MULTILINE):
                found.append(
                    Job(n, path.stem, alone, "rabbitmq", alone_full=full, full_minutes=more)
                )
    return sorted(found, key=lambda job: (job.number, job.broker != "redis"))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos")
    parser.add_argument("--quick", action="store_true", help="every scenario at reduced size")
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument(
        "--only", action="append", metavar="SCENARIO", help="run only this one (repeatable)"
    )
    parser.add_argument(
        "--broker", choices=("redis", "rabbitmq"), help="run only the scenarios on this broker"
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=int(os.environ.get("CHAOS_JOBS", "1")),
        help="scenarios run side by side, each on a Redis db of its own (default 1)",
    )
    parser.add_argument("--scenario", help=argparse.SUPPRESS)  # a child: run this one
    parser.add_argument("--template", help=argparse.SUPPRESS)
    parser.add_argument("--database", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.scenario:
        return _child(args)
    jobs = scenarios()
    unknown = sorted(set(args.only or ()) - {job.module for job in jobs})
    if unknown:
        known = sorted({job.module for job in jobs})
        parser.error(f"no scenario {', '.join(unknown)}; choose from {', '.join(known)}")
    if not 1 <= args.jobs <= 4:
        parser.error("--jobs takes 1 to 4")
    chosen = [
        job
        for job in jobs
        if (not args.only or job.module in args.only) and args.broker in (None, job.broker)
    ]
    if not chosen:
        parser.error("no scenario matches the --only and --broker given")
    RESULTS.mkdir(parents=True, exist_ok=True)
    _drop_orphans()
    template = f"backstop_chaos_{os.getpid()}"
    _create_database(template)
    started = time.monotonic()
    try:
        _setup_django(_environment(template))
        users = _prepare()
        rows = _run_children(chosen, template, users, args)
    finally:
        _drop_database(template)
    _write(rows, quick=args.quick)
    print(f"{len(rows)} scenarios in {time.monotonic() - started:.0f} s", flush=True)
    return 0 if all(r["verdict"] == "pass" for r in rows) else 1


def _run_children(
    chosen: list[Job], template: str, users: Users, args: argparse.Namespace
) -> list[dict[str, Any]]:
    """Run each job in a child process, ``args.jobs`` at a time (those that must run alone
    after the rest, one by one; at full size the longest first); return their rows in the
    issue's order."""
    rows: dict[Job, dict[str, Any]] = {}
    database = {job: f"{template}_{n}" for n, job in enumerate(chosen, start=1)}
    started: dict[Job, float] = {}
    limit = CHILD_LIMIT_QUICK if args.quick else CHILD_LIMIT
    for batch, width in (
        ([j for j in chosen if not j.runs_alone(args.quick)], args.jobs),
        ([j for j in chosen if j.runs_alone(args.quick)], 1),
    ):
        waiting = start_order(batch, quick=args.quick)
        running: dict[int, tuple[subprocess.Popen[bytes], Job]] = {}  # by Redis db
        while waiting or running:
            free = [db for db in _redis_dbs(args.jobs) if db not in running]
            for db in free[: width - len(running)]:
                if not waiting:
                    break
                job = waiting.pop(0)
                started[job] = time.monotonic()
                running[db] = (_start_child(job, template, database[job], db, users, args), job)
            for db, (child, job) in list(running.items()):
                if child.poll() is None and time.monotonic() > started[job] + limit:
                    print(f"--- {job.key} ran past {limit / 60:.0f} minutes: stopped", flush=True)
                    _stop_child(child)
                if child.poll() is not None:
                    del running[db]
                    rows[job] = _collect(job, child.returncode, time.monotonic() - started[job])
            time.sleep(0.5)
    return [rows[job] for job in chosen]


def start_order(jobs: list[Job], *, quick: bool) -> list[Job]:
    """Return ``jobs`` in the order to start them: at full size the longest first, so
    none is left to run by itself at the end; otherwise (and among equals) as given."""
    return list(jobs) if quick else sorted(jobs, key=lambda job: -job.full_minutes)


def _stop_child(child: subprocess.Popen[bytes]) -> None:
    """SIGTERM a child (it stops what it started on the way out), SIGKILL it after 60 s."""
    child.terminate()
    try:
        child.wait(timeout=60)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def _redis_dbs(jobs: int) -> list[int]:
    """The Redis dbs of side-by-side scenarios: CHAOS_REDIS_URL's, then the ones below it."""
    base = int(REDIS_URL.rsplit("/", 1)[1])
    return [base - i for i in range(jobs)]


def _start_child(
    job: Job, template: str, database: str, db: int, users: Users, args: argparse.Namespace
) -> subprocess.Popen[bytes]:
    print(f"--- {job.key} started (seed {args.seed}, Redis db {db})", flush=True)
    argv = [sys.executable, "-m", "tests.chaos", "--scenario", job.module, "--template", template]
    argv += ["--database", database, "--seed", str(args.seed), "--broker", job.broker]
    argv += ["--quick"] if args.quick else []
    env = {
        **os.environ,
        "CHAOS_REDIS_URL": f"{REDIS_URL.rsplit('/', 1)[0]}/{db}",
        "CHAOS_API_TOKEN": users.api,
        "CHAOS_OPERATOR_TOKEN": users.operator,
    }
    (RESULTS / f"{job.key}.row.json").unlink(missing_ok=True)
    with (RESULTS / f"{job.key}-harness.log").open("wb") as out:
        return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


def _collect(job: Job, returncode: int, seconds: float) -> dict[str, Any]:
    """Print a finished child's output; return its row (a failing one if it wrote none)."""
    output = (RESULTS / f"{job.key}-harness.log").read_text(errors="replace")
    print(
        f"--- {job.key} ended ({returncode}) after {seconds:.0f} s\n{output.rstrip()}", flush=True
    )
    try:
        found: dict[str, Any] = json.loads((RESULTS / f"{job.key}.row.json").read_text())
        return found
    except FileNotFoundError:
        crashed: dict[str, Any] = dict.fromkeys(COLUMNS, 0)
        crashed.update(scenario=job.key, verdict="fail", problems=["the scenario crashed"])
        return crashed


def _child(args: argparse.Namespace) -> int:
    """Run one scenario against its own clone of the template (and, on RabbitMQ, a virtual
    host of its own); write its row to a file."""
    global BROKER_URL
    # A SIGTERM from the parent (past its time) unwinds like an error: every finally below
    # stops the processes and servers this scenario started.
    signal.signal(signal.SIGTERM, _stop)
    name = args.database
    job = Job(0, args.scenario, False, args.broker or "redis")
    _create_database(name, template=args.template)
    if job.broker == "rabbitmq":
        BROKER_URL = rabbitmq.create_vhost(name)
    try:
        _setup_django(_environment(name))
        logging.getLogger("httpx").setLevel(logging.WARNING)
        scenario = importlib.import_module(f"tests.chaos.scenarios.{args.scenario}")
        title = scenario.NAME if job.broker == "redis" else f"{scenario.NAME}-{job.broker}"
        users = Users(os.environ["CHAOS_API_TOKEN"], os.environ["CHAOS_OPERATOR_TOKEN"])
        for old in RESULTS.glob(f"{title}-*.log"):
            # Not the RabbitMQ run's logs (its title extends this one's): it may be running.
            if job.broker == "redis" and old.name.startswith(f"{title}-rabbitmq-"):
                continue
            old.unlink()
        env = {**_environment(name), **scenario.ENV}
        concurrency = getattr(scenario, "WORKER_CONCURRENCY", 1)
        cluster = Cluster(env, RESULTS, _free_port(), prefix=f"{title}-", concurrency=concurrency)
        phases = [time.monotonic()]
        ours = getattr(scenario, "PROCESSES", True)  # else the scenario starts its own
        try:
            if ours:
                cluster.start()
            phases.append(time.monotonic())
            result: dict[str, Any] = scenario.run(cluster, users, quick=args.quick, seed=args.seed)
            phases.append(time.monotonic())
        finally:
            # A SIGTERM now would cut the clean-up short and leave processes behind.
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            cluster.kill()
        phases.append(time.monotonic())
        start, run, stop = (b - a for a, b in itertools.pairwise(phases))
        print(
            f"{title}: processes started in {start:.0f} s, ran {run:.0f} s, killed in {stop:.0f} s"
            if ours
            else f"{title}: ran {run:.0f} s, starting and stopping its own processes"
        )
        result["scenario"] = title
    finally:
        _drop_database(name)
        if job.broker == "rabbitmq":
            rabbitmq.delete_vhost(name)
    (RESULTS / f"{job.key}.row.json").write_text(json.dumps(result))
    return 0


def _environment(name: str) -> dict[str, str]:
    base = ADMIN_DATABASE_URL.rsplit("/", 1)[0]
    env = dict(os.environ)
    # Compiled bytecode is written and read again: every process here starts many times.
    inherited = (
        "DJANGO_SETTINGS_MODULE",
        "EVENTSTORE_EXTRA_HANDLER_MODULES",
        "PYTHONDONTWRITEBYTECODE",
    )
    for key in inherited:
        env.pop(key, None)
    env.update(TIMINGS)
    env.update(
        DEBUG="1",
        DATABASE_URL=f"{base}/{name}",
        REDIS_URL=REDIS_URL,
        CELERY_BROKER_URL=BROKER_URL,
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


def _drop_database(name: str) -> None:
    from django.db import connections

    if os.environ.get("CHAOS_KEEP_DB"):
        print(f"kept database {name} (CHAOS_KEEP_DB)")
        return
    connections.close_all()
    with psycopg.connect(ADMIN_DATABASE_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _stop(*_: object) -> None:
    """The child's SIGTERM: end the load's threads, then unwind (``SystemExit``), once."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    load.STOP.set()
    sys.exit(143)


def _drop_orphans() -> None:
    """Drop the databases of earlier runs whose harness is gone (killed before its end),
    unless databases are being kept (CHAOS_KEEP_DB)."""
    if os.environ.get("CHAOS_KEEP_DB"):
        return
    with psycopg.connect(ADMIN_DATABASE_URL, autocommit=True) as conn:
        names = [
            name
            for (name,) in conn.execute(
                "SELECT datname FROM pg_database"
                " WHERE datname ~ '^backstop_chaos_[0-9]+(_[0-9]+)?$'"
            )
        ]
        for name in names:
            if not Path(f"/proc/{name.split('_')[2]}").exists():
                print(f"dropping {name}, left by a run that was killed", flush=True)
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
