"""A real ``celery beat`` in a subprocess, on the test database (and any broker it's given)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.worker import WorkerProcess, worker_env

SCHEDULER = "apps.console.beat:HeartbeatScheduler"


# A beat process is stopped and read like a worker.
BeatProcess = WorkerProcess


def start_beat(tmp_dir: Path, *, scheduler: str = SCHEDULER, **env: str) -> BeatProcess:
    """Start beat with ``scheduler`` on the test database; return at once (beat answers
    nothing to wait for: poll what it writes). Its schedule file and pid file, if any,
    land in ``tmp_dir``."""
    log = tmp_dir / "beat.log"
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "config",
        "beat",
        "--loglevel",
        "INFO",
        "--scheduler",
        scheduler,
        "--schedule",
        str(tmp_dir / "celerybeat-schedule"),
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, cwd=tmp_dir, env=worker_env(**env), stdout=out, stderr=subprocess.STDOUT
        )
    return BeatProcess("beat", process, log)
