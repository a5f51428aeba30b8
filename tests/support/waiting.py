"""Polling with a deadline: the only way tests wait for something to happen."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")
# Run before every check of every wait: the in-process worker (tests/support/inline.py)
# runs what waits in the broker, so what a test waits for happens in its own process.
_before_each_check: list[Callable[[], object]] = []


@contextmanager
def running_before_each_check(step: Callable[[], object]) -> Iterator[None]:
    """Call ``step`` before each check of ``wait_until`` inside the block."""
    _before_each_check.append(step)
    try:
        yield
    finally:
        _before_each_check.remove(step)


def wait_until(
    condition: Callable[[], T], *, timeout: float = 20.0, interval: float = 0.05, message: str = ""
) -> T:
    """Return the first truthy value of ``condition()``; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        for step in _before_each_check:
            step()
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message or condition}")
        time.sleep(interval)
