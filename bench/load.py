"""Closed-loop HTTP load for the API scenario: ``wrk`` when installed, else a Python client.

Each of N clients sends a request, waits for the answer, and sends the next. The load
generator shares the machine's cores with the server, PostgreSQL and Redis, so its own
cost per request matters: wrk (C, one event loop per thread) spends a small fraction of
what a Python client does, and its latencies are not inflated by a client-side GIL.
``make bench`` installs wrk when it can.
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

LUA = """
wrk.method = "{method}"
wrk.headers["Authorization"] = "Token {token}"
wrk.headers["Content-Type"] = "application/json"
local n = 0
request = function()
  if wrk.method == "GET" then
    return wrk.format()
  end
  n = n + 1
  return wrk.format(nil, nil, nil, '{{"title": "load ' .. n .. '", "priority": "high"}}')
end
"""
UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


@dataclass(frozen=True)
class Run:
    """One load run: latency percentiles in milliseconds and how many requests completed."""

    p50: float
    p99: float
    requests: int


def generator() -> str:
    return "wrk" if shutil.which("wrk") else "python"


# The load generator runs on the first core and the server on the second (``pinned``),
# as the API scenario asks, so neither takes the other's CPU; on one core, nothing is pinned.
GENERATOR_CORE, SERVER_CORE = "0", "1"


def pinned(command: list[str], core: str) -> list[str]:
    """Return ``command`` run on ``core`` only, when taskset and a second core exist."""
    if shutil.which("taskset") and (os.cpu_count() or 1) >= 2:
        return ["taskset", "--cpu-list", core, *command]
    return command


def run(url: str, token: str, method: str, clients: int, seconds: float) -> Run:
    """Keep ``clients`` requests in flight against ``url`` for ``seconds``; fail on any 4xx/5xx."""
    if generator() == "wrk":
        return _wrk(url, token, method, clients, seconds)
    return _python(url, token, method, clients, seconds)


def _wrk(url: str, token: str, method: str, clients: int, seconds: float) -> Run:
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "load.lua"
        script.write_text(LUA.format(method=method, token=token))
        command = pinned(
            [
                "wrk",
                "--threads",
                "2",
                "--connections",
                str(clients),
                "--duration",
                f"{max(1, round(seconds))}s",
                "--timeout",
                "30s",
                "--latency",
                "--script",
                str(script),
                url,
            ],
            GENERATOR_CORE,
        )
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    if match := re.search(r"Non-2xx or 3xx responses: (\d+)", output):
        raise RuntimeError(f"bench: {match.group(1)} {method} requests failed:\n{output}")
    if re.search(r"Socket errors: .*(?:connect|read|write|timeout) [1-9]", output):
        raise RuntimeError(f"bench: socket errors under load:\n{output}")
    return Run(
        p50=_percentile(output, 50),
        p99=_percentile(output, 99),
        requests=int(re.search(r"(\d+) requests in", output).group(1)),
    )


def _percentile(output: str, percent: int) -> float:
    match = re.search(rf"^\s+{percent}%\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"bench: no {percent}th percentile in wrk's output:\n{output}")
    return float(match.group(1)) * UNITS[match.group(2)]


def _python(url: str, token: str, method: str, clients: int, seconds: float) -> Run:
    timings: list[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients)
    failures: list[str] = []

    def client() -> None:
        with httpx.Client(headers={"Authorization": f"Token {token}"}, timeout=30) as http:
            barrier.wait()
            deadline, n = time.perf_counter() + seconds, 0
            while time.perf_counter() < deadline and not failures:
                n += 1
                started = time.perf_counter()
                if method == "GET":
                    response = http.get(url)
                else:
                    response = http.post(url, json={"title": f"load {n}", "priority": "high"})
                elapsed = (time.perf_counter() - started) * 1000
                if response.status_code >= 400:
                    failures.append(f"{method} {url} answered {response.status_code}")
                with lock:
                    timings.append(elapsed)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise RuntimeError(f"bench: {failures[0]}")
    timings.sort()
    return Run(
        p50=statistics.median(timings),
        p99=timings[max(0, int(len(timings) * 0.99) - 1)],
        requests=len(timings),
    )
