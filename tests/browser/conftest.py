"""Fixtures of the browser tests: Debian's chromium driven by Playwright, and the console's
two personas, who log in through the real admin login page.

Olivia is an operator (staff in the "operator" group the migrations create): she may act on
dead letters. Vic is a viewer (staff in the "viewer" group): he sees every page, no button.

The browser is Debian's chromium (``bin/ensure-browser``, run by ``make test``, installs it):
``playwright install`` can't download its own browsers on machines without internet. A
missing chromium or Playwright fails the tests; it never skips them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from playwright.sync_api import Browser, Page, expect, sync_playwright

from apps.console.groups import OPERATOR, VIEWER

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
# Long enough for a loaded machine, short enough that a missing element fails fast.
TIMEOUT_MS = 20_000  # generous: a loaded machine serves pages slowly
expect.set_options(timeout=TIMEOUT_MS)


@dataclass(frozen=True)
class Persona:
    username: str
    password: str


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Return a headless chromium, shared by the module's tests.

    Between its calls Playwright's sync API marks its event loop as running in this thread,
    so Django would refuse the test's own ORM calls as "async". Nothing runs on that loop
    while the test's code does (Playwright switches to it only inside its calls), so the
    check is switched off, for this module only: the browser stops, and the loop with it,
    before the next module's tests run in this process."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run bin/ensure-browser (make test does)")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(
                executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS, headless=True
            )
            yield chromium
            chromium.close()


@pytest.fixture
def page(browser: Browser, live_server: Any) -> Iterator[Page]:
    """Return a fresh page (no cookies) whose relative URLs go to the live server."""
    context = browser.new_context(base_url=live_server.url)
    context.set_default_timeout(TIMEOUT_MS)
    yield context.new_page()
    context.close()


def staff_in(group: str, username: str) -> Persona:
    """Create a staff user in the console's ``group`` (it must exist: the migrations make it)."""
    password = f"pw-{username}-1"
    user = get_user_model().objects.create_user(username, password=password, is_staff=True)
    user.groups.add(Group.objects.get(name=group))
    return Persona(username, password)


@pytest.fixture
def olivia() -> Persona:
    return staff_in(OPERATOR, "olivia")


@pytest.fixture
def vic() -> Persona:
    return staff_in(VIEWER, "vic")


def log_in(page: Page, persona: Persona) -> None:
    """Log in through the admin's login page; end on the dashboard (the admin index)."""
    page.goto("/admin/login/?next=/admin/")
    page.locator("#id_username").fill(persona.username)
    page.locator("#id_password").fill(persona.password)
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#console-dashboard")).to_be_visible()
