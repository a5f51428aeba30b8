"""The schema-driven fuzz run against the real processes: schemathesis reads
``/api/schema/`` from gunicorn and sends every operation what the schema describes and what
it doesn't (the configuration of ``tests/support/fuzz.py``), signed in as the staff
operator, so the ops endpoints are reached too; the token revocation runs last, with a token
of its own. No response may be a 5xx or break the schema; then the run drains and is
counted like any other (fuzzed commands must not lose or double anything). QUICK and full
alike: 15 cases per operation and phase, some 2,100 cases in all (at least 2,000 required).
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import schemathesis
from schemathesis.engine import StopReason

from tests.chaos import processes
from tests.chaos.accounting import account
from tests.chaos.drain import drain
from tests.chaos.scenarios.common import Users, base_url, row
from tests.support.fuzz import REVOKE, FuzzReport, fuzz_config, operations_of

NUMBER = 15
NAME = "schema-fuzz"
ENV: dict[str, str] = {}
MIN_CASES = 2000


def run(cluster: processes.Cluster, users: Users, *, quick: bool, seed: int) -> dict[str, Any]:
    """Run the scenario and return its table row (with its findings under ``problems``)."""
    from tests.chaos.harness import RECONCILER_THRESHOLD, REDIS_URL

    url = base_url(cluster.port)
    examples = 15  # some 2,100 cases, half a minute: as cheap in a QUICK run as in a full one
    schema_url = f"{url}/api/schema/"
    ids = targets(url, users.operator)
    schema = schemathesis.openapi.from_url(
        schema_url, config=fuzz_config(users.operator, ids, examples=examples)
    )
    revoke = schemathesis.openapi.from_url(
        schema_url, config=fuzz_config(spare_token(), {}, examples=examples)
    )
    report = FuzzReport()
    started = time.monotonic()
    report.run(schema.exclude(name=REVOKE))
    report.run(revoke.include(name=REVOKE))
    fuzz_seconds = time.monotonic() - started
    # Fuzzed reminders may be due in years: what is due must have fired, no more.
    seconds, left = drain(REDIS_URL, RECONCILER_THRESHOLD + 120, future_reminders=False)
    counted = account([])
    counted.commands = report.total
    if report.stop_reasons != [StopReason.COMPLETED] * 2:
        counted.problems.append(f"the fuzz runs stopped early: {report.stop_reasons}")
    if report.server_errors:
        counted.problems.append(
            f"{len(report.server_errors)} responses of 5xx: {report.server_errors[:5]}"
        )
    counted.problems += report.failures[:10]
    if report.total < MIN_CASES:
        counted.problems.append(f"only {report.total} cases, not {MIN_CASES}")
    unreached = operations_of(schema) - set(report.cases)
    if unreached:
        counted.problems.append(f"operations never fuzzed: {sorted(unreached)}")
    summary = (
        f"{report.total} cases over {len(report.cases)} operations in {fuzz_seconds:.0f} s,"
        f" {len(report.server_errors)} responses of 5xx, {len(report.failures)} schema failures"
    )
    return row(NAME, counted, seconds, left, summary)


def targets(url: str, token: str) -> dict[str, list[str]]:
    """Create three todos with a reminder each; wait until the read model has them; return
    their ids by the path parameter that takes them (half the fuzzed ids are these)."""
    headers = {"Authorization": f"Token {token}"}
    with httpx.Client(base_url=f"{url}/api/v1/", headers=headers, timeout=15) as client:
        todos = [
            client.post("todos/", json={"title": f"Fuzz target {n}"}).raise_for_status().json()
            for n in range(3)
        ]
        reminders = [
            client.post(f"todos/{t['id']}/reminders/", json={"remind_at": "2099-01-01T09:00:00Z"})
            .raise_for_status()
            .json()
            for t in todos
        ]
        deadline = time.monotonic() + 30
        while any(client.get(f"todos/{t['id']}/").status_code != 200 for t in todos):
            if time.monotonic() > deadline:
                raise RuntimeError("the fuzz targets never reached the read model")
            time.sleep(0.2)
    return {"todo_id": [t["id"] for t in todos], "reminder_id": [r["id"] for r in reminders]}


def spare_token() -> str:
    """Return a new token of the chaos user, for the revocation to revoke."""
    from django.contrib.auth import get_user_model
    from knox.models import AuthToken

    return str(AuthToken.objects.create(get_user_model().objects.get(username="chaos"))[1])
