"""Scenario 4: database outage. Commands flow while every connection to the scenario's
database is terminated (``pg_terminate_backend``) every 5 s, and PostgreSQL itself is
restarted once, in the middle.

The restart must not touch the machine's PostgreSQL, so the scenario runs its database on a
cluster of its own (``OwnPostgres``: ``initdb`` in a temporary directory, a free port, trust
authentication, as the ``postgres`` user when we are root), loaded with a dump of the
migrated scenario database; it starts gunicorn, the workers and beat itself
(``PROCESSES = False``) against it and points the harness's Django connection at it for the
drain and the accounting (restored afterwards). The cluster is stopped and removed at the end;
its log is copied to ``results/db-outage-postgres.log``.

1. Send commands (the mix of scenario 1) at 12.5 a second over 4 connections, each
   attempt's status, body and latency recorded (``TimedLoad``). The first seconds are the
   baseline: commands answered (2xx or 4xx) a second.
2. Faults: terminate every backend of the database every 5 s (QUICK: 4 rounds over 15 s;
   full: 13 over a minute), and halfway through stop PostgreSQL (``-m fast``), keep it down
   for a few seconds and start it again.
3. After the last fault, keep sending until the answered rate over a sliding 3 s window
   reaches 90% of the baseline, for at most 60 s (QUICK: 15 s); drain; count.

It checks what the issue promises:

- no answer is a 5xx other than 503, and every 503 is the API's JSON error
  (``{"error": {"code": ..., "message": ...}}``); no request went unanswered (no timeout,
  no dropped connection), and gunicorn killed no worker for a timeout;
- every acknowledged command exists afterwards, nothing is duplicated (the accounting), and
  the run drains (the relay, the sweeps and the workers recovered);
- throughput is back to at least 90% of the baseline within the recovery deadline;
- the fault was exercised: backends were terminated and some command was answered while
  PostgreSQL was down; gunicorn, both workers and beat still run.

QUICK: a 3 s baseline, 15 s of faults (4 termination rounds, PostgreSQL down 2 s), up to
15 s of recovery: about 23 s of load (some 290 commands) when the API recovers at once, and
a few seconds of drain. Full: a 20 s baseline, a minute of faults (13 rounds, down 5 s), up
to 60 s of recovery: about 90 s of load (some 1,100 commands).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psycopg

from tests.chaos import processes
from tests.chaos.accounting import account
from tests.chaos.drain import drain
from tests.chaos.load import Command, Load
from tests.chaos.scenarios.common import Users, base_url, row, set_email

NUMBER = 4
NAME = "db-outage"
ENV: dict[str, str] = {}
PROCESSES = False  # it starts them itself, against its own PostgreSQL
ALONE = True  # it measures throughput, which a neighbour's load would skew

THREADS = 4
# As the other scenarios: about what the two single-process workers keep up with, so the
# backlog the outage leaves drains in seconds (as fast as answered, the reconciler re-sends
# pairs queued past LEDGER_QUEUED_SECONDS and the drain takes minutes).
PER_SECOND = 12.5
CLIENT_TIMEOUT = 15.0  # as tests.chaos.load's clients
TERMINATE_EVERY = 5.0
RECOVERED_SHARE = 0.9
REMINDER_AHEAD = (1.5, 4.0)  # seconds
WINDOW = 3.0  # seconds of the sliding window the recovered rate is measured over


@dataclass(frozen=True)
class Size:
    """How long each phase lasts, in seconds."""

    warm_up: float  # not counted: the first requests of each gunicorn worker
    baseline: float
    faults: float  # terminations every TERMINATE_EVERY from 0 to this, inclusive
    down: float  # PostgreSQL stopped for this long, halfway through the faults
    recovery: float  # the deadline for the rate to be back, after the last fault


QUICK = Size(warm_up=1, baseline=3, faults=15, down=2, recovery=15)
FULL = Size(warm_up=2, baseline=20, faults=60, down=5, recovery=60)


def run(cluster: processes.Cluster, users: Users, *, quick: bool, seed: int) -> dict[str, Any]:
    """Run the scenario and return its table row (with its findings under ``problems``)."""
    from tests.chaos.harness import RECONCILER_THRESHOLD, REDIS_URL, RESULTS

    size = QUICK if quick else FULL
    own = OwnPostgres(RESULTS / f"{NAME}-postgres.log")
    clock = [time.monotonic()]  # when each phase ended
    try:
        own.start()
        url = own.load(cluster.env["DATABASE_URL"])
        cluster.env["DATABASE_URL"] = url
        clock.append(time.monotonic())
        with _django_on(url):
            cluster.start()
            web = base_url(cluster.port)
            set_email(web, users.api)
            load = TimedLoad(web, users.api, seed, PER_SECOND)
            faults = Faults(own, urlsplit(url).path.lstrip("/"), size)
            clock.append(time.monotonic())
            _run_load(load, faults, size)
            clock.append(time.monotonic())
            seconds, left = drain(REDIS_URL, RECONCILER_THRESHOLD + 120)
            clock.append(time.monotonic())
            report = account(load.commands)
            clock.append(time.monotonic())
            report.problems += check_answers(load.attempts)
            rates = Throughput(load.done, faults, size)
            report.problems += rates.check() + faults.check(load.attempts)
            report.problems += check_processes(cluster)
            lengths = [end - start for start, end in itertools.pairwise(clock)]
            phases = dict(
                zip(("postgres", "processes", "load", "drain", "count"), lengths, strict=True)
            )
            return row(NAME, report, seconds, left, _summary(load, faults, rates, phases))
    finally:
        cluster.kill()
        own.stop()


def _summary(load: TimedLoad, faults: Faults, rates: Throughput, phases: dict[str, float]) -> str:
    statuses = Counter(str(a.status or "no answer") for a in load.attempts)
    slowest = max((a.seconds for a in load.attempts), default=0.0)
    took = ", ".join(f"{phase} {seconds:.0f} s" for phase, seconds in phases.items())
    return (
        f"{len(faults.terminated)} termination rounds ({sum(faults.terminated)} backends),"
        f" PostgreSQL down {faults.down_seconds:.1f} s; answers {dict(statuses)},"
        f" slowest {slowest:.1f} s; {rates.describe()}; took {took}"
    )


def _run_load(load: TimedLoad, faults: Faults, size: Size) -> None:
    """Send commands through the baseline, the faults and the recovery, then stop."""
    stop = threading.Event()
    sender = threading.Thread(target=load.run_until, args=(stop,), name="load")
    sender.start()
    try:
        load.running.wait(30)
        time.sleep(size.warm_up)
        # Sent late during the warm-up (the first answers are slow), commands would catch up
        # in a burst and inflate the baseline; the commands then in flight end within 1 s.
        load.pace_from_now()
        time.sleep(1 + size.baseline)
        faults.run()
        rates = Throughput(load.done, faults, size)
        while not rates.recovered() and time.monotonic() < faults.last + size.recovery:
            time.sleep(0.5)
            rates = Throughput(load.done, faults, size)
    finally:
        stop.set()
        sender.join()


@dataclass
class Attempt:
    """One HTTP request of a command: when, how long, and what came back."""

    command: str
    started: float  # time.monotonic()
    seconds: float
    status: int | None
    body: str = ""  # of a 5xx
    error: str = ""  # no answer: the exception


class TimedLoad(Load):
    """``Load`` sent until told to stop, recording every attempt (``attempts``) and when each
    command ended (``done``: monotonic time, answered by the application: 2xx or 4xx)."""

    def __init__(self, base_url: str, token: str, seed: int, per_second: float) -> None:
        super().__init__(base_url, token, seed, per_second)
        self.attempts: list[Attempt] = []
        self.done: list[tuple[float, bool]] = []
        self.running = threading.Event()

    def run_until(self, stop: threading.Event) -> list[Command]:
        """Send commands on ``THREADS`` connections until ``stop`` is set; return them."""
        self.started, self.sent = time.monotonic(), 0
        self.running.set()
        with ThreadPoolExecutor(THREADS) as pool:
            list(pool.map(lambda _: self._until(stop), range(THREADS)))
        return self.commands

    def _until(self, stop: threading.Event) -> None:
        headers = {"Authorization": f"Token {self.token}"}
        with httpx.Client(
            base_url=self.base_url, headers=headers, timeout=CLIENT_TIMEOUT
        ) as client:
            while not stop.is_set():
                command = self._next()
                self._send(client, command)
                with self.lock:
                    self.commands.append(command)
                    self.done.append((time.monotonic(), command.outcome != "failed"))

    def pace_from_now(self) -> None:
        """Send at the rate from now on, with no catching up on commands sent late before."""
        with self.lock:
            self.started, self.sent = time.monotonic(), 0

    def _body(self, command: Command) -> dict[str, Any] | None:
        """Reminders 1.5-4 s ahead (not 3-20 s): they fire within the run, and the drain,
        which waits for every reminder, does not wait 20 s for the last one."""
        body = super()._body(command)
        if command.kind == "reminder" and body is not None:
            ahead = timedelta(seconds=self.rng.uniform(*REMINDER_AHEAD))
            body["remind_at"] = (datetime.now(tz=UTC) + ahead).isoformat()
        return body

    def _request(self, client: httpx.Client, command: Command, *args: Any) -> httpx.Response:
        started = time.monotonic()
        try:
            response = super()._request(client, command, *args)
        except httpx.HTTPError as exc:
            self._record(
                Attempt(command.id, started, time.monotonic() - started, None, "", repr(exc))
            )
            raise
        body = response.text[:500] if response.status_code >= 500 else ""
        self._record(
            Attempt(command.id, started, time.monotonic() - started, response.status_code, body)
        )
        return response

    def _record(self, attempt: Attempt) -> None:
        with self.lock:
            self.attempts.append(attempt)


# Trust authentication on 127.0.0.1 only; UTF8 whatever the locale says (as the dump is).
INITDB = ("-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")


class OwnPostgres:
    """A PostgreSQL cluster of the scenario's own, on a free port, to restart at will."""

    def __init__(self, log_copy: Path) -> None:
        self.bin = _postgres_bin()
        self.dir = Path(tempfile.mkdtemp(prefix="backstop-chaos-pg-"))
        self.data, self.log, self.log_copy = self.dir / "data", self.dir / "postgres.log", log_copy
        self.port = _free_port()
        self.options = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
            " -c shared_buffers=16MB -c max_connections=50"
        )

    @property
    def admin_url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        """Create the cluster (first time) and start it; return once it accepts connections."""
        if not self.data.exists():
            if os.geteuid() == 0:  # initdb refuses root: the cluster belongs to postgres
                shutil.chown(self.dir, "postgres")
            self._as_owner("initdb", "-D", str(self.data), *INITDB)
        self._pg_ctl("-l", str(self.log), "-o", self.options, "start")

    def halt(self) -> None:
        """Stop the server as a restart does (``-m fast``: sessions are terminated)."""
        self._pg_ctl("-m", "fast", "stop")

    def load(self, source_url: str) -> str:
        """Copy the database at ``source_url`` into this cluster; return its URL here."""
        name = urlsplit(source_url).path.lstrip("/")
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        target = f"postgres://postgres@127.0.0.1:{self.port}/{name}"
        dump = subprocess.Popen(
            [str(self.bin / "pg_dump"), "--no-owner", "-d", source_url], stdout=subprocess.PIPE
        )
        subprocess.run(
            [str(self.bin / "psql"), "-q", "-v", "ON_ERROR_STOP=1", "-d", target],
            stdin=dump.stdout,
            stdout=subprocess.DEVNULL,
            check=True,
        )
        if dump.stdout is not None:
            dump.stdout.close()
        if dump.wait() != 0:
            raise RuntimeError(f"pg_dump of {name} failed")
        return target

    def stop(self) -> None:
        """Stop the cluster (if it runs), keep its log, remove its directory."""
        with contextlib.suppress(RuntimeError, OSError):
            if (self.data / "postmaster.pid").exists():
                self._pg_ctl("-m", "immediate", "stop")
        with contextlib.suppress(OSError):
            shutil.copyfile(self.log, self.log_copy)
        shutil.rmtree(self.dir, ignore_errors=True)

    def _pg_ctl(self, *args: str) -> None:
        """Run ``pg_ctl`` on the cluster; wait (60 s at most) for it to take effect."""
        self._as_owner("pg_ctl", "-D", str(self.data), "-w", "-t", "60", *args)

    def _as_owner(self, program: str, *args: str) -> None:
        """Run a PostgreSQL program as the cluster's owner (``postgres`` when we are root)."""
        argv = [str(self.bin / program), *args]
        if os.geteuid() == 0:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
        if done.returncode:
            raise RuntimeError(f"{program} failed ({done.returncode}): {done.stderr.decode()}")


class Faults:
    """Terminate every backend of ``database`` every 5 s; stop PostgreSQL once, halfway."""

    def __init__(self, own: OwnPostgres, database: str, size: Size) -> None:
        self.own, self.database, self.size = own, database, size
        self.terminated: list[int] = []  # backends terminated, per round
        self.first = self.last = 0.0  # monotonic: the first fault began, the last ended
        self.down_from = self.down_until = 0.0
        self.errors: list[str] = []

    @property
    def down_seconds(self) -> float:
        return self.down_until - self.down_from

    def run(self) -> None:
        """Inject the faults on their schedule (from now); return after the last."""
        self.first = time.monotonic()
        restart_at = self.size.faults / 2
        rounds = int(self.size.faults // TERMINATE_EVERY) + 1
        restarted = False
        for n in range(rounds):
            at = n * TERMINATE_EVERY
            if not restarted and at > restart_at:
                self._sleep_until(restart_at)
                self._restart()
                restarted = True
            self._sleep_until(at)
            self._terminate()
        self.last = time.monotonic()

    def _sleep_until(self, offset: float) -> None:
        time.sleep(max(0.0, self.first + offset - time.monotonic()))

    def _terminate(self) -> None:
        try:
            with psycopg.connect(self.own.admin_url, autocommit=True, connect_timeout=5) as conn:
                rows = conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = %s AND pid <> pg_backend_pid()",
                    [self.database],
                ).fetchall()
        except psycopg.Error as exc:
            self.errors.append(f"terminate: {exc}")
            return
        self.terminated.append(sum(1 for (done,) in rows if done))

    def _restart(self) -> None:
        self.down_from = time.monotonic()
        self.own.halt()
        time.sleep(self.size.down)
        self.own.start()
        self.down_until = time.monotonic()

    def check(self, attempts: list[Attempt]) -> list[str]:
        """Return what shows the faults were not exercised (empty when they were)."""
        found = [f"fault injection failed: {e}" for e in self.errors]
        if not sum(self.terminated):
            found.append(f"no backend was terminated in {len(self.terminated)} rounds")
        if not self.down_until:
            found.append("PostgreSQL was not restarted")
        during = [
            a
            for a in attempts
            if a.status and self.down_from <= a.started + a.seconds <= self.down_until
        ]
        if not during:
            found.append("no request was answered while PostgreSQL was down")
        return found


class Throughput:
    """Commands answered a second: the baseline, and after the last fault."""

    def __init__(self, done: list[tuple[float, bool]], faults: Faults, size: Size) -> None:
        self.ends = sorted(t for t, answered in done if answered)
        self.faults, self.size = faults, size
        end = faults.first or time.monotonic()
        # At most the offered rate: a window edge or a catch-up burst is not steady throughput.
        self.baseline = min(PER_SECOND, self._rate(end - size.baseline, end))
        self.best = 0.0
        self.back_after: float | None = None  # seconds after the last fault
        self._measure()

    def _rate(self, start: float, end: float) -> float:
        return sum(1 for t in self.ends if start <= t < end) / (end - start)

    def _measure(self) -> None:
        if not self.faults.last:
            return
        start = self.faults.last
        horizon = min(self.faults.last + self.size.recovery, max(self.ends, default=start))
        while start + WINDOW <= horizon:
            rate = self._rate(start, start + WINDOW)
            self.best = max(self.best, rate)
            if rate >= RECOVERED_SHARE * self.baseline:
                self.back_after = start + WINDOW - self.faults.last
                return
            start += 0.5

    def recovered(self) -> bool:
        return self.back_after is not None

    def check(self) -> list[str]:
        if not self.baseline:
            return ["no command was answered in the baseline"]
        if self.recovered():
            return []
        return [
            f"throughput not back to {RECOVERED_SHARE:.0%} of the baseline"
            f" ({self.baseline:.1f}/s) within {self.size.recovery:.0f} s of the last fault:"
            f" best {WINDOW:.0f} s window {self.best:.1f}/s"
        ]

    def describe(self) -> str:
        back = f"back in {self.back_after:.1f} s" if self.back_after is not None else "not back"
        return f"baseline {self.baseline:.1f} answered/s, {back}"


def check_answers(attempts: list[Attempt]) -> list[str]:
    """No 5xx but 503, each 503 the API's error body; no request left unanswered."""
    found: list[str] = []
    wrong = [a for a in attempts if a.status is not None and a.status >= 500 and a.status != 503]
    if wrong:
        found.append(
            f"{len(wrong)} answers 5xx other than 503:"
            f" {[(a.command, a.status, a.body[:200]) for a in wrong[:3]]}"
        )
    bodies = [a for a in attempts if a.status == 503 and not _error_body(a.body)]
    if bodies:
        found.append(
            f"{len(bodies)} 503s without the API's error body: {[a.body[:200] for a in bodies[:3]]}"
        )
    unanswered = [a for a in attempts if a.status is None]
    if unanswered:
        found.append(
            f"{len(unanswered)} requests got no answer (timeout {CLIENT_TIMEOUT:.0f} s):"
            f" {[(a.command, round(a.seconds, 1), a.error[:200]) for a in unanswered[:3]]}"
        )
    return found


def _error_body(body: str) -> bool:
    try:
        error = json.loads(body)["error"]
    except (ValueError, KeyError, TypeError):
        return False
    return isinstance(error, dict) and bool(error.get("code")) and bool(error.get("message"))


def check_processes(cluster: processes.Cluster) -> list[str]:
    """gunicorn, both workers and beat still run; gunicorn timed no worker out."""
    found = [
        f"{p.name} exited" for p in [cluster.web, *cluster.workers, cluster.beat] if not p.alive()
    ]
    timeouts = cluster.web.log.read_text(errors="replace").count("WORKER TIMEOUT")
    if timeouts:
        found.append(f"gunicorn timed out {timeouts} workers (a hang on the database)")
    return found


@contextlib.contextmanager
def _django_on(url: str) -> Iterator[None]:
    """Point this process's Django connection (the drain's and accounting's) at ``url``."""
    from django.db import connections

    settings = connections["default"].settings_dict
    saved = {k: settings.get(k) for k in ("HOST", "PORT", "NAME")}
    parts = urlsplit(url)
    connections.close_all()
    settings.update(HOST=parts.hostname, PORT=parts.port, NAME=parts.path.lstrip("/"))
    try:
        yield
    finally:
        connections.close_all()
        settings.update(saved)


def _postgres_bin() -> Path:
    """Return PostgreSQL's program directory: ``CHAOS_PG_BIN``, else the newest installed."""
    if os.environ.get("CHAOS_PG_BIN"):
        return Path(os.environ["CHAOS_PG_BIN"])
    installed = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))
    if installed:
        return installed[-1]
    found = shutil.which("initdb")
    if not found:
        raise RuntimeError("no PostgreSQL programs (initdb) found; set CHAOS_PG_BIN")
    return Path(found).parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
