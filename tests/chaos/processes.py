"""The real processes of a chaos run: gunicorn, Celery workers and beat, as in the Procfile.

Each process leads a process group of its own (``start_new_session``), so the harness can
SIGKILL one pool child, one worker with its pool, or stop everything it started — and
nothing else: every signal goes to a PID or process group this module created.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / ".venv" / "bin"
QUEUES = "default,handlers,maintenance"


@dataclass
class Proc:
    """A started process, its command and where its output goes."""

    name: str
    argv: list[str]
    log: Path
    popen: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None


@dataclass
class Cluster:
    """gunicorn, the workers and beat of one chaos run."""

    env: dict[str, str]
    log_dir: Path
    port: int
    prefix: str = ""  # of the log files: "<prefix><process>.log"
    concurrency: int = 1  # pool processes of each worker (a scenario's WORKER_CONCURRENCY)
    web: Proc = field(init=False)
    workers: list[Proc] = field(init=False)
    beat: Proc = field(init=False)

    def __post_init__(self) -> None:
        bind = f"127.0.0.1:{self.port}"
        self.web = self._proc(
            "web",
            [
                str(BIN / "gunicorn"),
                "config.wsgi",
                "--bind",
                bind,
                "--access-logfile",
                "-",
                "--timeout",
                "30",
                "--no-control-socket",
                "--workers",
                "2",
            ],
        )
        self.workers = [self._worker(i) for i in (1, 2)]
        self.beat = self._proc(
            "beat",
            [
                str(BIN / "celery"),
                "-A",
                "config",
                "beat",
                "--loglevel",
                "INFO",
                "--scheduler",
                "apps.console.beat:HeartbeatScheduler",
                "--schedule",
                str(self.log_dir / f"{self.prefix}beat-schedule"),
            ],
        )

    def _proc(self, name: str, argv: list[str]) -> Proc:
        return Proc(name, argv, self.log_dir / f"{self.prefix}{name}.log")

    def _worker(self, number: int) -> Proc:
        argv = [
            str(BIN / "celery"),
            "-A",
            "config",
            "worker",
            "--loglevel",
            "INFO",
            "--hostname",
            f"chaos{number}@%h",
            "--concurrency",
            str(self.concurrency),
            "--queues",
            QUEUES,
            "--without-gossip",
            "--without-mingle",
        ]
        return self._proc(f"worker{number}", argv)

    def start(self) -> None:
        """Start every process; return once the web answers and each worker is ready."""
        for proc in [self.web, *self.workers, self.beat]:
            start(proc, self.env)
        _wait(lambda: _answers(f"http://127.0.0.1:{self.port}/health/"), 60, "gunicorn")
        for worker in self.workers:
            _wait(lambda w=worker: "ready." in w.log.read_text(errors="replace"), 60, worker.name)

    def kill(self) -> None:
        """SIGKILL every process group: the end of a run, once its count is taken (a
        graceful stop waits for running tasks and requests, up to 15 s a process, for
        nothing). Once only: a second call signals nothing (a group id may be reused)."""
        for proc in [self.web, *self.workers, self.beat]:
            with contextlib.suppress(subprocess.TimeoutExpired):  # not reaped in 10 s: go on
                kill_group(proc)
            proc.popen = None


def start(proc: Proc, env: dict[str, str]) -> None:
    """Start ``proc`` as the leader of a new process group, appending to its log."""
    out = proc.log.open("ab")
    out.write(f"\n=== start {proc.starts + 1} at {time.strftime('%X')} ===\n".encode())
    out.flush()
    proc.popen = subprocess.Popen(
        proc.argv,
        cwd=ROOT,
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    out.close()
    proc.starts += 1


def kill_group(proc: Proc) -> None:
    """SIGKILL the process and every process of its group, as a crashed machine would."""
    if proc.popen is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.popen.pid, signal.SIGKILL)
    proc.popen.wait(timeout=10)


def stop(proc: Proc) -> None:
    """SIGTERM the process group, then SIGKILL it after 15 s."""
    if proc.popen is None:
        return
    if proc.popen.poll() is None:
        try:
            os.killpg(proc.popen.pid, signal.SIGTERM)
            proc.popen.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
        except ProcessLookupError:
            return
    kill_group(proc)


def children(pid: int) -> list[int]:
    """Return the PIDs of ``pid``'s children (a prefork worker's pool), from /proc."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code < 500
    except httpx.HTTPError:
        return False


def _wait(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.25)
    raise RuntimeError(f"{what} did not come up within {timeout:.0f} s")
