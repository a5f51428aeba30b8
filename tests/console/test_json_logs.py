"""Log lines as JSON (the default without DEBUG), with the delivery's context as fields."""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path

import pytest

from apps.console.logging import JsonFormatter
from apps.resilience import log_context
from apps.resilience.log_context import DeliveryContextFilter
from tests.test_deploy_settings import _production_env, _run


def _line(message: str, *args: object, exc: BaseException | None = None) -> dict[str, object]:
    record = logging.LogRecord(
        "apps.test",
        logging.WARNING,
        __file__,
        1,
        message,
        args,
        (type(exc), exc, None) if exc else None,
    )
    DeliveryContextFilter().filter(record)
    return json.loads(JsonFormatter().format(record))


def test_a_line_written_in_a_delivery_names_its_handler_event_and_correlation() -> None:
    event_id, correlation = uuid.uuid4(), uuid.uuid4()
    with log_context.delivery("test.scripted", event_id):
        log_context.set_correlation(correlation)
        line = _line("charged %s", "card")
    assert line["message"] == "charged card"
    assert line["level"] == "WARNING"
    assert line["logger"] == "apps.test"
    assert (line["handler"], line["event_id"], line["correlation_id"]) == (
        "test.scripted",
        str(event_id),
        str(correlation),
    )


def test_a_line_outside_a_delivery_has_no_context_fields_and_keeps_its_traceback() -> None:
    try:
        raise ValueError("boom")
    except ValueError as exc:
        line = _line("failed", exc=exc)
    assert "handler" not in line
    assert "event_id" not in line
    assert "ValueError: boom" in str(line["exception"])


LOG_A_LINE = (
    "import django, logging; django.setup(); logging.getLogger('apps.x').warning('hi %s', 1)"
)


@pytest.mark.parametrize(("debug", "json_lines"), [({}, True), ({"DEBUG": "1"}, False)])
def test_without_debug_the_console_logs_json_lines_and_with_debug_text(
    tmp_path: Path, debug: dict[str, str], json_lines: bool
) -> None:
    result = _run(_production_env(tmp_path, **debug), "-c", LOG_A_LINE)

    assert result.returncode == 0, result.stderr
    [last] = result.stderr.splitlines()[-1:]
    if json_lines:
        assert json.loads(last) | {"time": "-"} == {
            "time": "-",
            "level": "WARNING",
            "process": "MainProcess",
            "logger": "apps.x",
            "message": "hi 1",
        }
    else:
        assert last.endswith("WARNING MainProcess apps.x: hi 1")
