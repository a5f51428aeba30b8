"""The admin index is the console's dashboard: each figure counts the right rows and links to
the change list showing exactly those rows; the failures chart draws one bar per minute."""

from __future__ import annotations

import html
import re
import uuid
from datetime import datetime, timedelta
from typing import Any
from xml.etree import ElementTree

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from apps.eventstore.models import Event, OutboxMessage, ProjectionState
from apps.resilience.breakers import CircuitBreaker, State
from apps.resilience.models import Attempt, DeadLetter, Delivery
from apps.sagas.models import SagaInstance

INDEX = reverse("admin:index")
SVG = "{http://www.w3.org/2000/svg}"

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator_client() -> Client:
    """Olivia runs Backstop: a superuser in the console."""
    user = get_user_model().objects.create_superuser("olivia", "olivia@example.test", "pw-olivia-1")
    client = Client()
    client.force_login(user)
    return client


def figure(page: Any, element_id: str) -> tuple[str, str]:
    """Return the text and the link of the dashboard's figure ``element_id``."""
    found = re.search(rf'<a[^>]*id="{element_id}"[^>]*href="([^"]*)"[^>]*>([^<]*)</a>', _text(page))
    assert found, f"no figure {element_id} on the dashboard"
    return found.group(2).strip(), html.unescape(found.group(1))


def listed(client: Client, url: str) -> set[Any]:
    """Follow a figure's link; return the primary keys of the change list's rows."""
    page = client.get(url)
    assert page.status_code == 200, url  # a lookup the admin refuses redirects to ?e=1
    return {row.pk for row in page.context["cl"].result_list}


def _text(page: Any) -> str:
    return page.content.decode()


def letter(kind: str, severity: str, *, status: str = "pending", age: int = 0) -> DeadLetter:
    failed_at = timezone.now() - timedelta(minutes=age)
    return DeadLetter.objects.create(
        handler="test.dashboard",
        event_id=uuid.uuid4(),
        kind=kind,
        severity=severity,
        status=status,
        exception_type="BoomError",
        message=f"boom {uuid.uuid4()}",
        fingerprint="dash",
        first_failed_at=failed_at,
        last_failed_at=failed_at,
    )


def raw_event(event_type: str = "test.dashboard.happened") -> Event:
    return Event.objects.create(
        event_id=uuid.uuid4(),
        stream_type="test.dashboard",
        stream_id=uuid.uuid4(),
        version=1,
        type=event_type,
        schema_version=1,
        data={},
        metadata={"correlation_id": str(uuid.uuid4())},
    )


def test_open_dead_letters_are_counted_by_kind_and_severity_and_link_to_exactly_them(
    operator_client: Client,
) -> None:
    transient = [letter("transient", "high"), letter("transient", "high", status="retrying")]
    timeout = letter("timeout", "critical")
    letter("transient", "high", status="resolved")  # closed: counted nowhere

    page = operator_client.get(INDEX)

    expected = {
        "dash-dead-letters-open": {*(d.pk for d in transient), timeout.pk},
        "dash-kind-transient": {d.pk for d in transient},
        "dash-kind-timeout": {timeout.pk},
        "dash-severity-high": {d.pk for d in transient},
        "dash-severity-critical": {timeout.pk},
    }
    for element_id, pks in expected.items():
        count, url = figure(page, element_id)
        assert int(count) == len(pks), element_id
        assert listed(operator_client, url) == pks, element_id
    assert 'id="dash-kind-validation"' not in _text(page)


def test_the_oldest_open_letter_is_one_click_from_its_cause(operator_client: Client) -> None:
    oldest = letter("system", "critical", age=90)
    letter("transient", "low", age=5)

    text, url = figure(operator_client.get(INDEX), "dash-oldest-letter")

    assert text.startswith("1 h 30 min")
    assert url == reverse("admin:resilience_deadletter_change", args=[oldest.pk])
    cause = operator_client.get(url)
    assert cause.status_code == 200
    assert oldest.message in _text(cause)


def test_stuck_and_failed_sagas_link_to_exactly_them(operator_client: Client) -> None:
    past, future = timezone.now() - timedelta(minutes=5), timezone.now() + timedelta(minutes=5)
    failed = saga(state="failed")
    stuck = [saga(state="running", deadline=past), saga(state="compensating", deadline=past)]
    saga(state="running", deadline=future)
    saga(state="completed", deadline=past)

    page = operator_client.get(INDEX)

    for element_id, pks in {
        "dash-sagas-failed": {failed.pk},
        "dash-sagas-stuck": {s.pk for s in stuck},
    }.items():
        count, url = figure(page, element_id)
        assert int(count) == len(pks)
        assert listed(operator_client, url) == pks


def saga(**fields: Any) -> SagaInstance:
    return SagaInstance.objects.create(
        type="test-dashboard",
        correlation_id=uuid.uuid4(),
        trigger_event_id=uuid.uuid4(),
        **fields,
    )


def test_an_open_breaker_is_shown_with_its_live_state(operator_client: Client) -> None:
    held = CircuitBreaker(f"dash-{uuid.uuid4().hex[:8]}")
    held.force(State.FORCED_OPEN, reason="test")
    reset = CircuitBreaker(f"dash-{uuid.uuid4().hex[:8]}")
    reset.force(State.FORCED_OPEN, reason="test")
    reset.force(None, reason="test")

    page = operator_client.get(INDEX)

    state, url = figure(page, f"dash-breaker-{held.name}")
    assert state == "forced_open"
    assert f'id="dash-breaker-{reset.name}"' not in _text(page)
    transitions = operator_client.get(url).context["cl"].result_list
    assert {t.breaker for t in transitions} == {held.name}


def test_the_outbox_backlog_links_to_the_unpublished_rows(operator_client: Client) -> None:
    waiting = [OutboxMessage.objects.create(event=raw_event()) for _ in range(2)]
    OutboxMessage.objects.create(event=raw_event(), published_at=timezone.now())

    count, url = figure(operator_client.get(INDEX), "dash-outbox")

    assert int(count) == 2
    assert listed(operator_client, url) == {row.pk for row in waiting}


def test_deliveries_not_yet_terminal_link_to_exactly_them(operator_client: Client) -> None:
    def pair(status: str) -> Delivery:
        return Delivery.objects.create(handler="test.dash", event_id=uuid.uuid4(), status=status)

    queued = [pair("queued"), pair("queued")]
    retrying = pair("retrying")
    pair("succeeded")
    pair("dead_lettered")

    page = operator_client.get(INDEX)

    for element_id, pks in {
        "dash-deliveries-open": {*(d.pk for d in queued), retrying.pk},
        "dash-deliveries-queued": {d.pk for d in queued},
        "dash-deliveries-retrying": {retrying.pk},
    }.items():
        count, url = figure(page, element_id)
        assert int(count) == len(pks), element_id
        assert listed(operator_client, url) == pks, element_id


def test_projection_lag_counts_its_events_past_the_checkpoint(operator_client: Client) -> None:
    done = raw_event("todo.created")
    ProjectionState.objects.update_or_create(name="todos", defaults={"position": done.position})
    raw_event("todo.created"), raw_event("todo.completed")
    raw_event()  # not one of the projection's types

    lag, url = figure(operator_client.get(INDEX), "dash-projection-todos")

    assert int(lag) == 2
    assert listed(operator_client, url) == {"todos"}


def test_the_chart_has_one_bar_per_minute_scaled_to_the_busiest(operator_client: Client) -> None:
    now = timezone.now()
    busy, quiet = now - timedelta(minutes=5), now - timedelta(minutes=1)
    delivery = Delivery.objects.create(handler="test.dash", event_id=uuid.uuid4())
    three = [attempt(delivery, busy) for _ in range(3)]
    attempt(delivery, quiet)
    attempt(delivery, now - timedelta(hours=2))  # before the hour the chart shows
    letter("transient", "high", age=5)

    bars = chart_bars(operator_client.get(INDEX))
    after = timezone.now()

    assert len(bars) == 60
    # The page's own minute: the one the test began in, or the next if it turned meanwhile.
    assert list(bars)[-1] in {f"{timezone.localtime(t):%H:%M}" for t in (now, after)}
    busy_bar, quiet_bar = bars.pop(f"{busy:%H:%M}"), bars.pop(f"{quiet:%H:%M}")
    assert (busy_bar["attempts"], busy_bar["height"]) == (3, 100.0)
    assert (busy_bar["letters"], busy_bar["letters_height"]) == (1, 33.3)
    assert busy_bar["label"] == f"{busy:%H:%M}: 3 failed attempt(s), 1 dead letter(s)"
    assert (quiet_bar["attempts"], quiet_bar["height"]) == (1, 33.3)
    assert (quiet_bar["letters"], quiet_bar["letters_height"]) == (0, 0.0)
    assert all(bar["height"] == bar["letters_height"] == 0 for bar in bars.values())
    assert listed(operator_client, busy_bar["url"]) == {row.pk for row in three}


def test_the_dashboard_is_for_staff_only() -> None:
    clerk = get_user_model().objects.create_user("clerk", password="pw-clerk-1")
    client = Client()
    client.force_login(clerk)

    for visitor in (client, Client()):
        page = visitor.get(INDEX)
        assert page.status_code == 302
        assert page["Location"].startswith(reverse("admin:login"))


def test_the_figures_take_a_handful_of_queries_however_many_rows(
    operator_client: Client, django_assert_max_num_queries: Any
) -> None:
    for i in range(30):
        letter(["transient", "timeout", "system"][i % 3], "high", age=i)
        saga(state="failed")

    with django_assert_max_num_queries(30):
        page = operator_client.get(INDEX)

    assert figure(page, "dash-dead-letters-open")[0] == "30"
    assert b"app-resilience" in page.content  # the app list is still there, below


def attempt(delivery: Delivery, at: datetime) -> Attempt:
    row = Attempt.objects.create(
        delivery=delivery, number=1, kind="transient", exception_type="BoomError", outcome="retry"
    )
    Attempt.objects.filter(pk=row.pk).update(at=at)  # auto_now_add ignores a given value
    return row


def chart_bars(page: Any) -> dict[str, dict[str, Any]]:
    """Return the chart's bars by minute label: counts and heights, from the SVG itself."""
    svg = re.search(r"<svg id=\"failure-chart-svg\".*?</svg>", _text(page), re.S)
    assert svg
    root = ElementTree.fromstring(svg.group(0))
    parent = {child: node for node in root.iter() for child in node}
    bars = {}
    for group in root.iter(f"{SVG}g"):
        attempts = group.find(f"{SVG}rect[@class='attempts']")
        letters = group.find(f"{SVG}rect[@class='dead-letters']")
        assert attempts is not None
        assert letters is not None
        title, link = group.find(f"{SVG}title"), parent[group]
        bars[group.attrib["data-minute"]] = {
            "attempts": int(attempts.attrib["data-count"]),
            "height": float(attempts.attrib["height"]),
            "letters": int(letters.attrib["data-count"]),
            "letters_height": float(letters.attrib["height"]),
            "label": title.text if title is not None else None,
            "url": link.attrib["href"],
        }
    return bars
