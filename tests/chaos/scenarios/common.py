"""What every scenario shares: the API users, the table row and its verdict, the operator's
"retry group"."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:  # the accounting needs Django set up, which the harness does first
    from tests.chaos.accounting import Report


@dataclass(frozen=True)
class Users:
    """API tokens: ``api`` sends the commands; ``operator`` (staff, "operator" group)
    acts through the ops API."""

    api: str
    operator: str


def base_url(port: int) -> str:
    return f"http://127.0.0.1:{port}"


def set_email(url: str, token: str) -> None:
    """Give the user an email address, so email reminders have somewhere to go."""
    response = httpx.patch(
        f"{url}/api/v1/me/",
        json={"email": "chaos@example.com"},
        headers={"Authorization": f"Token {token}"},
        timeout=15,
    )
    response.raise_for_status()


def row(
    scenario: str, report: Report, seconds: float, left: dict[str, int], summary: str
) -> dict[str, Any]:
    """Print the scenario's summary and findings; return its table row with a verdict:
    pass with 0 lost, 0 duplicated, 0 unaccounted, drained in time and no other finding."""
    if left:
        report.problems.append(f"not drained within the deadline: {left}")
    failed = report.problems or report.lost or report.duplicated or report.unaccounted
    print(f"{scenario}: {summary}; outcomes {report.outcomes}")
    for problem in report.problems:
        print(f"  {problem}")
    return {
        "scenario": scenario,
        "commands": report.commands,
        "events": report.events,
        "handler_runs": report.handler_runs,
        "retries": report.retries,
        "dead_letters": report.dead_letters,
        "lost": report.lost,
        "duplicated": report.duplicated,
        "drain_seconds": seconds,
        "verdict": "fail" if failed else "pass",
        "problems": report.problems,
    }


def retry_groups(url: str, token: str) -> list[int]:
    """Retry every failure group through the ops API; return the dead letters retried."""
    headers = {"Authorization": f"Token {token}"}
    with httpx.Client(base_url=f"{url}/api/v1/ops/", headers=headers, timeout=30) as client:
        groups = client.get("dead-letter-groups/")
        groups.raise_for_status()
        done: list[int] = []
        for group in groups.json():
            while True:  # a pass works for CONSOLE_GROUP_ACTION_SECONDS at most
                outcome = client.post(f"dead-letter-groups/{group['fingerprint']}/retry/", json={})
                if outcome.status_code == 404:  # no open letter left in the group
                    break
                outcome.raise_for_status()
                answer = outcome.json()
                done += answer["done"]
                if not answer["remaining"] or not answer["done"]:
                    break
    return done


def check_retried(retried: list[int]) -> list[str]:
    """Every dead letter was retried by its group and is now resolved."""
    from apps.resilience.models import DeadLetter

    found: list[str] = []
    twice = sorted(pk for pk, n in Counter(retried).items() if n > 1)
    if twice:
        found.append(f"{len(twice)} dead letters retried more than once: {twice[:5]}")
    if set(retried) != set(DeadLetter.objects.values_list("pk", flat=True)):
        found.append(f"the group retries acted on {len(set(retried))} of the dead letters")
    open_letters = list(
        DeadLetter.objects.exclude(status=DeadLetter.Status.RESOLVED).values_list("pk", "status")
    )
    if open_letters:
        found.append(f"{len(open_letters)} dead letters not resolved: {open_letters[:5]}")
    return found
