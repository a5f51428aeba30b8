"""A schema-driven fuzz run over every operation of /api/schema/, signed in as Alice.

schemathesis reads the schema the API serves and sends what it describes, and what it
doesn't: boundary and out-of-range values, wrong types, unexpected methods (its coverage
phase), random data (fuzzing), and chains that feed one response's ids into the next
request (stateful). Half the ids in paths are Alice's own todos and reminders, so found
objects are answered too, not only 404s. No response may be a 5xx, and each must match
the schema: a documented status, content type, headers and body.

Four of its checks stay off. ``positive_data_acceptance`` and ``negative_data_rejection``
judge how strict input validation is, not whether the API keeps its schema, and JSON Schema
can't say all of it (a blank title, a recurrence rule, a webhook host that must resolve to
a public address are strings, and refused). ``ensure_resource_availability`` reads a todo
right after creating it, but reads come from the read model, which a handler updates just
after the write commits (README: "normally current within milliseconds").
``use_after_free`` expects a 404 after a DELETE, but deleting a todo is a soft delete: it
stays readable (status ``deleted``) so that ``/restore/`` can bring it back.

Deliveries run in-process (``inline_worker``) only when a test waits, and the run doesn't:
its reads see the read model as the fixture's todos left it, which is a valid answer.

The run is deterministic (a fixed seed, derandomized) and bounded by its number of cases
(about 1,000, some 30 seconds): schemathesis's ``max-time`` would instead repeat the phases
until the time is up.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import schemathesis
from schemathesis.engine import StopReason

from tests.support.api import Api
from tests.support.fuzz import REVOKE, FuzzReport, fuzz_config, operations_of
from tests.todos.conftest import projected

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("inline_worker")]

MIN_CASES = 300


@pytest.fixture
def unthrottled(settings: Any) -> None:
    """Switch every rate limit off: the run sends a thousand requests a minute from one
    address. With no rate a throttle counts nothing, so no later test inherits the counts."""
    rates = dict.fromkeys(settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"])
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates}


def things_of(api: Api) -> dict[str, list[str]]:
    """Create three todos (in the read model) with a reminder each for ``api``; return their
    ids by the path parameter that takes them."""
    todos = [api.create(title=f"Fuzz target {n}")["id"] for n in range(3)]
    for todo_id in todos:
        projected(todo_id, 1)
    reminders = [
        api.post(f"todos/{todo_id}/reminders/", {"remind_at": "2099-01-01T09:00:00Z"}).json()["id"]
        for todo_id in todos
    ]
    return {"todo_id": todos, "reminder_id": reminders}


@pytest.mark.timeout(120)
@pytest.mark.usefixtures("unthrottled")
def test_fuzzing_every_operation_finds_no_server_error_and_no_schema_mismatch(
    alice: Api, bob: Api, live_server: Any
) -> None:
    url = f"{live_server.url}/api/schema/"
    ids = things_of(alice)
    schema = schemathesis.openapi.from_url(url, config=fuzz_config(alice.token, ids))
    revoke = schemathesis.openapi.from_url(url, config=fuzz_config(bob.token, {}))
    report = FuzzReport()
    started = time.monotonic()

    report.run(schema.exclude(name=REVOKE))
    report.run(revoke.include(name=REVOKE))

    print(f"\nfuzz: {report.total} cases in {time.monotonic() - started:.1f}s: {report.cases}")
    assert report.stop_reasons == [StopReason.COMPLETED] * 2
    assert report.server_errors == []
    assert report.failures == []
    assert report.total >= MIN_CASES
    assert operations_of(schema) <= set(report.cases)
    assert report.cases["POST /api/v1/todos/bulk/"] > 0
