"""The bench harness: a fresh database, real workers, repeated measurements, one table."""

from __future__ import annotations

import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
BENCH_DB = "backstop_bench"
ENV = {
    "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{BENCH_DB}",
    "REDIS_URL": "redis://127.0.0.1:6379/13",
    "CELERY_BROKER_URL": "redis://127.0.0.1:6379/13",
    "DEBUG": "0",
    "SECRET_KEY": "bench-only-" + "x" * 50,
    "SECURE_SSL_REDIRECT": "0",
    "SESSION_COOKIE_SECURE": "0",
    "CSRF_COOKIE_SECURE": "0",
    "SECURE_HSTS_SECONDS": "0",
    "API_USER_RATE": "1000000/s",
    "EVENTSTORE_EXTRA_HANDLER_MODULES": "bench.domain",
    "LOG_LEVEL": "WARNING",
    "WEBHOOK_ALLOW_PRIVATE": "1",
}


def prepare_environment() -> None:
    """Point this process (and every process it starts) at a fresh bench database and Redis db."""
    os.environ.update(ENV)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    subprocess.run(
        ["dropdb", "-h", "127.0.0.1", "-U", "postgres", "--if-exists", BENCH_DB], check=True
    )
    subprocess.run(["createdb", "-h", "127.0.0.1", "-U", "postgres", BENCH_DB], check=True)
    subprocess.run(["redis-cli", "-n", "13", "flushdb"], check=True, capture_output=True)


@dataclass
class Measured:
    median: float
    min: float
    max: float

    @classmethod
    def of(cls, values: list[float]) -> Measured:
        return cls(statistics.median(values), min(values), max(values))

    def as_dict(self) -> dict[str, float]:
        return {
            "median": round(self.median, 3),
            "min": round(self.min, 3),
            "max": round(self.max, 3),
        }


@dataclass
class Result:
    scenario: str
    unit: str
    ours: Measured
    baseline: Measured | None
    target: str
    met: bool
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or not self.baseline.median:
            return None
        return self.ours.median / self.baseline.median

    def as_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "unit": self.unit,
            "ours": self.ours.as_dict(),
            "baseline": self.baseline.as_dict() if self.baseline else None,
            "ratio": round(self.ratio, 3) if self.ratio is not None else None,
            "target": self.target,
            "met": self.met,
            **({"notes": self.notes} if self.notes else {}),
        }


def repeat(run: Callable[[], float], times: int, warmup: int = 1) -> Measured:
    """Run ``run`` ``warmup`` times unrecorded, then ``times`` times; return the spread."""
    for _ in range(warmup):
        run()
    return Measured.of([run() for _ in range(times)])


class Processes:
    """Workers and servers the harness starts; all stopped, by PID, when it ends."""

    def __init__(self) -> None:
        self.running: list[subprocess.Popen[bytes]] = []

    def start(
        self, *command: str, log: str, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        out = (RESULTS / f"{log}.log").open("wb")
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=dict(os.environ) if env is None else env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        self.running.append(process)
        return process

    def worker(self, name: str, concurrency: int = 2) -> subprocess.Popen[bytes]:
        return self.start(
            sys.executable,
            "-m",
            "celery",
            "-A",
            "config",
            "worker",
            "--loglevel",
            "WARNING",
            "--hostname",
            f"{name}@localhost",
            "--concurrency",
            str(concurrency),
            "--queues",
            "default,handlers,maintenance",
            "--without-gossip",
            "--without-mingle",
            log=name,
        )

    def stop_all(self) -> None:
        for process in self.running:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.running:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        self.running.clear()


def wait_for(condition: Callable[[], Any], timeout: float, what: str, every: float = 0.01) -> Any:
    """Poll ``condition`` every ``every`` seconds until it is true; return its value.

    Polling a measured system costs it CPU: where the check is a query, poll less often.
    """
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"bench: timed out waiting for {what}")
        time.sleep(every)
    return value


def machine() -> dict[str, Any]:
    import django
    import psycopg

    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    postgres = subprocess.run(["psql", "--version"], capture_output=True, text=True).stdout.strip()
    redis_version = subprocess.run(
        ["redis-server", "--version"], capture_output=True, text=True
    ).stdout.split()[2]
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(memory / 2**30, 1),
        "python": platform.python_version(),
        "django": django.get_version(),
        "psycopg": psycopg.__version__,
        "postgresql": postgres,
        "redis": redis_version,
        "platform": platform.platform(),
    }


def report(results: list[Result], quick: bool, partial: bool = False) -> Path:
    """Print the table and write bench/results/latest.json (quick.json in quick mode,
    partial.json when only some scenarios ran, so a partial run never overwrites a full one)."""
    rows = [("scenario", "ours", "baseline", "ratio", "target", "verdict")]
    for r in results:
        base = f"{r.baseline.median:,.1f}" if r.baseline else "—"
        ratio = f"{r.ratio:.2f}" if r.ratio is not None else "—"
        rows.append(
            (
                r.scenario,
                f"{r.ours.median:,.1f} {r.unit}",
                base,
                ratio,
                r.target,
                "met" if r.met else "MISSED",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for n, row in enumerate(rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
        if n == 0:
            print("  ".join("-" * width for width in widths))
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / ("partial.json" if partial else "quick.json" if quick else "latest.json")
    body = {"machine": machine(), "quick": quick, "scenarios": [r.as_dict() for r in results]}
    path.write_text(json.dumps(body, indent=2) + "\n")
    print(f"\nwritten: {path.relative_to(ROOT)}")
    return path
