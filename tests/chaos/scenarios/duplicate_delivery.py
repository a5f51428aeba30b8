"""Scenario 6: duplicate delivery. The relay and the ledger's re-sends publish every deliver
message twice (``EVENTSTORE_PUBLISH_COPIES=2``, a fault-injection setting) while the
commands of scenario 1 flow: every effect must still happen exactly once."""

from __future__ import annotations

from typing import Any

from tests.chaos import processes
from tests.chaos.accounting import account
from tests.chaos.drain import drain
from tests.chaos.load import Load
from tests.chaos.scenarios.common import Users, base_url, row, set_email

NUMBER = 6
NAME = "duplicate-delivery"
COPIES = 2
ENV = {"EVENTSTORE_PUBLISH_COPIES": str(COPIES)}
RABBITMQ = True  # run on RabbitMQ too
PER_SECOND = 20.0
# Full size: every message twice, beside neighbouring scenarios, with a backlog at the end
# that drains within the deadline.
FULL_PER_SECOND = 10.0


def run(cluster: processes.Cluster, users: Users, *, quick: bool, seed: int) -> dict[str, Any]:
    """Run the scenario and return its table row (with its findings under ``problems``)."""
    from tests.chaos.harness import BROKER_URL, RECONCILER_THRESHOLD

    url = base_url(cluster.port)
    set_email(url, users.api)
    commands = Load(
        url, users.api, seed, PER_SECOND if quick else FULL_PER_SECOND, quick=quick
    ).run(150 if quick else 1500)
    seconds, left = drain(BROKER_URL, RECONCILER_THRESHOLD + 120)
    report = account(commands)
    copies = skipped_copies(cluster)
    # Proof that the fault was injected: the second copies arrived and did nothing.
    if not copies:
        report.problems.append("no run ended as a duplicate: were the copies published?")
    if report.dead_letters:
        report.problems.append(f"{report.dead_letters} dead letters with no failure injected")
    return row(NAME, report, seconds, left, f"{copies} runs ended as a duplicate or stray copy")


def skipped_copies(cluster: processes.Cluster) -> int:
    """Return how many runs the workers logged as a duplicate (or a stray copy): ignored."""
    found = 0
    for worker in cluster.workers:
        for line in worker.log.read_text(errors="replace").splitlines():
            if "succeeded in" in line and ("'duplicate'" in line or "'ignored'" in line):
                found += 1
    return found
