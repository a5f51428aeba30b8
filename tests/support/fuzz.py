"""The schema-driven fuzz run's configuration and report, shared by the ordinary suite
(``tests/test_schema_fuzz.py``, in-process) and ``make chaos`` (against the real gunicorn).

schemathesis reads the schema the API serves and sends what it describes, and what it
doesn't: boundary and out-of-range values, wrong types, unexpected methods (its coverage
phase), random data (fuzzing), and chains that feed one response's ids into the next
request (stateful). Four of its checks stay off; ``tests/test_schema_fuzz.py`` says why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import schemathesis
from schemathesis.engine import StopReason, events, from_schema

SEED = 20_260_101
CHECKS_OFF = (
    "positive_data_acceptance",
    "negative_data_rejection",
    "ensure_resource_availability",
    "use_after_free",
)
#: Revokes the token it is called with: fuzzed in a run of its own, with a token to spare.
REVOKE = "DELETE /api/v1/auth/token/"


def fuzz_config(
    token: str, ids: dict[str, list[str]], *, examples: int = 10
) -> schemathesis.Config:
    """Return a run's configuration: ``token`` signs every request; half the path ids are
    drawn from ``ids`` (by parameter name); ``examples`` cases per operation and phase."""
    return schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "cache": {"enabled": False},
            "workers": 1,
            # Connection: close, or the live server keeps a thread and a database connection
            # per kept-alive socket (slower, and the test database can't be dropped after).
            "headers": {"Authorization": f"Token {token}", "Connection": "close"},
            "generation": {
                "max-examples": examples,
                "deterministic": True,
                "database": "none",
                "with-security-parameters": False,  # always the header above
            },
            "phases": {"stateful": {"generation": {"max-examples": examples}}},
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
