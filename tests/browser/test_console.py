"""The operators' console in a real browser: the dashboard shows a dead letter a failing
handler produced, and an operator follows it, dry-runs it, edits it and retries its group;
a viewer sees the same pages without a single button, and a forged action is refused.

Deliveries run in-process (``inline_worker``) whenever a test waits, so the dead letter and
the retry that resolves it come from the handler runtime itself, not from written rows.
"""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import pytest
from django.urls import reverse
from playwright.sync_api import Locator, Page, Response, expect

from apps.resilience.models import DeadLetter, DeadLetterAction
from tests.browser.conftest import Persona, log_in
from tests.resilience.conftest import request_job
from tests.resilience.handlers import effects, script
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("inline_worker")]

ARTIFACTS = Path(__file__).parent / "artifacts"
HANDLER = "test.scripted"
DRY_RUN = "Dry run the handler (nothing is kept or sent)"
EDIT = "Edit payload and retry"
Status = DeadLetter.Status
Action = DeadLetterAction.Action


def failed_job() -> tuple[str, DeadLetter]:
    """Request a job whose handler fails with a validation error (no retry for that kind);
    return the job's name and the dead letter the runtime wrote."""
    name = f"browser-{uuid.uuid4().hex[:8]}"
    script(name, "validation")  # then "ok": the next run of the handler succeeds
    recorded = request_job(name)
    letter = wait_until(
        lambda: DeadLetter.objects.filter(handler=HANDLER, event_id=recorded.event_id).first(),
        message="the failing job's dead letter",
    )
    return name, letter


def resolved(letter: DeadLetter) -> DeadLetter:
    """Wait (running the deliveries) until ``letter`` is resolved; return it."""
    return wait_until(
        lambda: DeadLetter.objects.filter(pk=letter.pk, status=Status.RESOLVED).first(),
        message=f"dead letter #{letter.pk} to be resolved",
    )


def audit_trail(letter: DeadLetter) -> list[str]:
    return list(letter.actions.values_list("action", flat=True))


def letter_url(letter: DeadLetter) -> str:
    return reverse("admin:resilience_deadletter_change", args=[letter.pk])


def field(page: Page, name: str) -> Locator:
    """Return the read-only field ``name`` of a letter's page."""
    return page.locator(f".field-{name} .readonly")


def test_an_operator_retries_the_group_of_a_letter_found_on_the_dashboard(
    page: Page, olivia: Persona
) -> None:
    name, letter = failed_job()
    assert (letter.kind, letter.status) == ("validation", Status.PENDING)
    static: list[Response] = []
    page.on("response", lambda r: static.append(r) if "/static/" in r.url else None)
    refused: list[str] = []  # what the Content Security Policy blocked, as chromium logs it
    page.on("console", lambda m: refused.append(m.text) if "Security Policy" in m.text else None)

    log_in(page, olivia)

    expect(page.locator("#dash-dead-letters-open")).to_have_text("1")
    expect(page.locator("#dash-kind-validation")).to_have_text("1")
    oldest = page.locator("#dash-oldest-letter")
    expect(oldest).to_contain_text(f"{HANDLER}: ")
    expect(oldest).to_contain_text("the payload is not acceptable")
    loaded = {r.url.split("/static/", 1)[1]: r.status for r in static}
    assert loaded.get("admin/css/base.css") == 200, loaded  # the admin's own styles
    assert loaded.get("console/dashboard.css") == 200, loaded
    assert all(status == 200 for status in loaded.values()), loaded
    assert refused == []
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "dashboard.png", full_page=True)

    oldest.click()
    expect(page).to_have_url(re.compile(re.escape(letter_url(letter)) + "$"))
    expect(field(page, "status")).to_have_text(Status.PENDING.label)

    page.get_by_role("button", name=DRY_RUN).click()
    expect(page.locator("#dry-run-outcome")).to_have_text("The handler would succeed.")
    expect(page.locator("#dry-run-events")).to_contain_text("test.effect.recorded")
    assert effects(HANDLER, name) == 0  # a dry run keeps nothing

    page.get_by_role("link", name=f"#{letter.pk}").click()
    page.get_by_role("link", name="Its group").click()
    row = page.locator(f"#group-{letter.fingerprint}")
    expect(row.locator(".count")).to_have_text("1")
    row.get_by_role("button", name="Retry all").click()
    expect(page.locator(".messagelist")).to_contain_text("1 dead letter(s) retried.")

    resolved(letter)
    assert effects(HANDLER, name) == 1
    page.reload()
    expect(page.locator(f"#group-{letter.fingerprint}")).to_have_count(0)
    page.goto(letter_url(letter))
    expect(field(page, "status")).to_have_text(Status.RESOLVED.label)
    expect(page.locator("#actions-group")).to_contain_text(Action.RETRY_SUCCEEDED.label)


def test_an_operator_edits_a_payload_and_sees_the_audit_and_the_retry(
    page: Page, olivia: Persona
) -> None:
    name, letter = failed_job()
    fixed = f"{name}-fixed"
    log_in(page, olivia)
    page.goto(letter_url(letter))

    page.get_by_role("link", name=EDIT).click()
    payload = page.locator("textarea[name=payload]")
    assert json.loads(payload.input_value())["name"] == name
    payload.fill("{not json")
    page.get_by_role("button", name="Save and retry").click()
    expect(page.locator(".errorlist")).to_contain_text("not valid JSON")
    payload.fill(json.dumps({"name": fixed}))
    page.get_by_role("button", name="Save and retry").click()

    expect(page.locator(".messagelist")).to_contain_text("Payload edited; retry queued.")
    expect(page.locator("#edited-payload pre")).to_contain_text(f'"name": "{fixed}"')
    audit = page.locator("#actions-group")
    expect(audit).to_contain_text(Action.EDIT_PAYLOAD.label)
    expect(audit).to_contain_text("olivia")
    expect(field(page, "status")).to_have_text(Status.RETRYING.label)

    resolved(letter)
    assert (effects(HANDLER, fixed), effects(HANDLER, name)) == (1, 0)  # the edit was used
    page.reload()
    expect(field(page, "status")).to_have_text(Status.RESOLVED.label)
    trail = [Action.DEAD_LETTERED, Action.EDIT_PAYLOAD, Action.RETRY, Action.RETRY_SUCCEEDED]
    assert audit_trail(letter) == trail
    expect(audit.locator("td.field-action")).to_have_text([action.label for action in trail])


def test_a_viewer_sees_a_letter_without_buttons_and_a_forged_group_retry_is_refused(
    page: Page, vic: Persona
) -> None:
    _, letter = failed_job()
    log_in(page, vic)

    page.goto(letter_url(letter))
    expect(field(page, "handler")).to_have_text(HANDLER)
    expect(page.get_by_role("link", name=EDIT)).to_have_count(0)
    expect(page.locator("#content").get_by_role("button")).to_have_count(0)  # no dry run
    page.get_by_role("link", name="Its group").click()
    row = page.locator(f"#group-{letter.fingerprint}")
    expect(row.locator(".count")).to_have_text("1")
    expect(page.locator("#content").get_by_role("button")).to_have_count(0)  # no group action
    page.goto(reverse("admin:resilience_deadletter_changelist"))
    expect(page.locator("#result_list")).to_contain_text(HANDLER)
    expect(page.locator("select[name=action]")).to_have_count(0)

    token = page.locator("#logout-form input[name=csrfmiddlewaretoken]").input_value()
    forged = page.request.post(
        reverse("admin:resilience_deadletter_group_action", args=[letter.fingerprint]),
        form={"csrfmiddlewaretoken": token, "verb": "retry"},
    )

    assert forged.status == 403
    assert "CSRF" not in forged.text()  # refused for the permission, not for the token
    letter.refresh_from_db()
    assert letter.status == Status.PENDING
    assert audit_trail(letter) == [Action.DEAD_LETTERED]
