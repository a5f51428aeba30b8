"""bin/run-procfile, what `make run` starts its processes with: a requested stop reaches each
process's main pid only (a Celery worker's pool children are its own to stop) and ends with
status 0, so make reports no error; a process that fails still stops everything."""

from __future__ import annotations

import importlib.machinery
import signal
import subprocess
import sys
import types
from pathlib import Path

import pytest

from tests.support.waiting import wait_until

RUNNER = Path(__file__).resolve().parent.parent / "bin" / "run-procfile"
# A parent that, like gunicorn or a Celery worker, stops its child itself (with SIGUSR1) when
# told to stop; the child notes any SIGTERM that reaches it from outside.
PARENT = """
import signal, subprocess, sys
from pathlib import Path
child = subprocess.Popen([sys.executable, "child.py"])
def stop(signum, frame):
    child.send_signal(signal.SIGUSR1)
    sys.exit(child.wait())
signal.signal(signal.SIGTERM, stop)
Path("parent-ready").touch()
signal.pause()
"""
CHILD = """
import signal, sys
from pathlib import Path
def term(signum, frame):
    Path("child-got-sigterm").touch()
    sys.exit(1)
signal.signal(signal.SIGTERM, term)
signal.signal(signal.SIGUSR1, lambda signum, frame: sys.exit(0))
Path("child-ready").touch()
while True:
    signal.pause()
"""


def _start(tmp_path: Path, procfile: str) -> subprocess.Popen[str]:
    (tmp_path / "Procfile").write_text(procfile)
    return subprocess.Popen(
        [sys.executable, str(RUNNER), "Procfile"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # a terminal's Ctrl-C reaches the runner, not this test
    )


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_requested_stop_reaches_main_processes_only_and_ends_with_status_0(
    tmp_path: Path, signum: signal.Signals
) -> None:
    (tmp_path / "parent.py").write_text(PARENT)
    (tmp_path / "child.py").write_text(CHILD)
    runner = _start(tmp_path, f"app: {sys.executable} parent.py\n")
    wait_until(lambda: (tmp_path / "child-ready").exists() and (tmp_path / "parent-ready").exists())

    runner.send_signal(signum)
    output, _ = runner.communicate(timeout=30)

    assert runner.returncode == 0, output
    assert f"{signum.name} received" in output
    assert "app stopped (rc=0)" in output
    assert not (tmp_path / "child-got-sigterm").exists(), output


def test_a_process_that_fails_stops_the_others_and_gives_its_status(tmp_path: Path) -> None:
    runner = _start(
        tmp_path,
        f"fails: {sys.executable} -c 'import sys; sys.exit(3)'\n"
        f"waits: {sys.executable} -c 'import signal; signal.pause()'\n",
    )

    output, _ = runner.communicate(timeout=30)

    assert runner.returncode == 3, output
    assert "waits stopped" in output


def _runner_module() -> types.ModuleType:
    """Return bin/run-procfile loaded as a module (it has no .py suffix)."""
    loader = importlib.machinery.SourceFileLoader("run_procfile", str(RUNNER))
    module = types.ModuleType(loader.name)
    loader.exec_module(module)
    return module


class _Recorder:
    """Stands in for honcho's process manager: records whom it was told to stop."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def terminate(self, pid: int) -> None:
        self.calls.append(("terminate", pid))

    def kill(self, pid: int) -> None:
        self.calls.append(("kill", pid))


def test_a_stop_asked_for_before_a_pid_is_known_reaches_it_once_it_is() -> None:
    """Ctrl-C right after start: honcho hasn't heard one process's pid yet. The stop must
    not fail (honcho's own raised inside its signal handler and hung), and the process
    must get its SIGTERM once its pid arrives, and only once."""
    manager = _runner_module().PatientManager()
    recorder = _Recorder()
    manager._procmgr = recorder
    manager._processes = {"web": {"pid": 101}, "worker": {}}
    manager._system_print = lambda text: None
    previous = signal.getsignal(signal.SIGALRM)
    try:
        manager.terminate()
        assert recorder.calls == [("terminate", 101)]
        assert signal.getitimer(signal.ITIMER_REAL)[0] > 0  # a retry is scheduled

        manager._processes["worker"]["pid"] = 102  # its start message came in
        wait_until(lambda: ("terminate", 102) in recorder.calls, timeout=5, message="the retry")
        assert recorder.calls == [("terminate", 101), ("terminate", 102)]
        manager.kill()
        assert recorder.calls[2:] == [("kill", 101), ("kill", 102)]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
