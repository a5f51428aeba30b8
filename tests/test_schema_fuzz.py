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
from dataclasses import dataclass, field
from typing import Any

import pytest
import schemathesis
from schemathesis.engine import StopReason, events, from_schema

from tests.support.api import Api
from tests.todos.conftest import projected

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("inline_worker")]

SEED = 20_260_101
MIN_CASES = 300
CHECKS_OFF = (
    "positive_data_acceptance",
    "negative_data_rejection",
    "ensure_resource_availability",
    "use_after_free",
)
#: Revokes the token it is called with: fuzzed in a run of its own, with Bob's token.
REVOKE = "DELETE /api/v1/auth/token/"


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


def fuzz_config(user: Api, ids: dict[str, list[str]]) -> schemathesis.Config:
    """Return a run's configuration: ``user`` signs every request; half the path ids are
    drawn from ``ids`` (by parameter name)."""
    return schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "cache": {"enabled": False},
            "workers": 1,
            # Connection: close, or the live server keeps a thread and a database connection
            # per kept-alive socket (slower, and the test database can't be dropped after).
            "headers": {"Authorization": f"Token {user.token}", "Connection": "close"},
            "generation": {
                "max-examples": 10,
                "deterministic": True,
                "database": "none",
                "with-security-parameters": False,  # always the header above
            },
            "phases": {"stateful": {"generation": {"max-examples": 10}}},
            "checks": {name: {"enabled": False} for name in CHECKS_OFF},
            "dictionaries": {name: {"values": values} for name, values in ids.items()},
            "parameters": {
                f"path.{name}": {"dictionary": name, "probability": 0.5} for name in ids
            },
        }
    )


@dataclass
class FuzzReport:
    """What the runs did: cases per operation, responses of 500 or more, failed checks."""

    cases: dict[str, int] = field(default_factory=dict)
    server_errors: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    stop_reasons: list[StopReason] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.cases.values())

    def run(self, schema: Any) -> None:
        """Run every phase of schemathesis over ``schema`` and add what happened."""
        for event in from_schema(schema).execute():
            if isinstance(event, events.ScenarioFinished):
                self.record(event.recorder)
            elif isinstance(event, events.NonFatalError | events.FatalError):
                self.failures.append(f"schemathesis error: {event!r}"[:800])
            elif isinstance(event, events.EngineFinished):
                self.stop_reasons.append(event.stop_reason)

    def record(self, recorder: Any) -> None:
        """Add a finished scenario's cases, server errors and failed checks."""
        self.cases[recorder.label] = self.cases.get(recorder.label, 0) + len(recorder.cases)
        for interaction in recorder.interactions.values():
            response = interaction.response
            if response is not None and response.status_code >= 500:
                self.server_errors.append(f"{interaction.request.method} {interaction.request.uri}")
        for checks in recorder.checks.values():
            self.failures += [
                f"{recorder.label}: {check.name}: {check.failure_info.failure}"[:800]
                for check in checks
                if check.failure_info is not None
            ]


def operations_of(schema: Any) -> set[str]:
    return {result.ok().label for result in schema.get_all_operations()}


@pytest.mark.timeout(120)
@pytest.mark.usefixtures("unthrottled")
def test_fuzzing_every_operation_finds_no_server_error_and_no_schema_mismatch(
    alice: Api, bob: Api, live_server: Any
) -> None:
    url = f"{live_server.url}/api/schema/"
    ids = things_of(alice)
    schema = schemathesis.openapi.from_url(url, config=fuzz_config(alice, ids))
    revoke = schemathesis.openapi.from_url(url, config=fuzz_config(bob, {}))
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
