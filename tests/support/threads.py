"""Running database work in threads, each with its own connection, closed afterwards."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from django.db import connections


def closing_connections(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap ``fn`` so the thread's database connections are closed when it returns."""

    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        finally:
            connections.close_all()

    return run


def run_in_threads(fn: Callable[..., Any], args_list: list[tuple[Any, ...]]) -> list[Future[Any]]:
    """Run ``fn(*args)`` for each args tuple at once; return the finished futures in order."""
    with ThreadPoolExecutor(max_workers=len(args_list)) as pool:
        futures = [pool.submit(closing_connections(fn), *args) for args in args_list]
    return futures
