"""Operators see the delivery ledger and the outbox backlog in the admin, read-only: each
figure at the top of a change list links to exactly the rows it counts."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from apps.eventstore.models import Event, OutboxMessage
from apps.resilience.models import Delivery
from tests.resilience.conftest import request_job

pytestmark = pytest.mark.django_db
DELIVERIES = reverse("admin:resilience_delivery_changelist")
OUTBOX = reverse("admin:eventstore_outboxmessage_changelist")
Status = Delivery.Status


def _delivery(
    status: str,
    *,
    changed: timedelta,
    due_in: timedelta | None = None,
    resent: timedelta | None = None,
    handler: str = "test.scripted",
) -> Delivery:
    """Create a ledger row last changed ``changed`` ago, due ``due_in`` from now (negative:
    overdue) and last re-sent ``resent`` ago."""
    now = timezone.now()
    row = Delivery.objects.create(handler=handler, event_id=uuid.uuid4(), status=status)
    Delivery.objects.filter(pk=row.pk).update(  # update() leaves auto_now alone
        updated_at=now - changed,
        reconcile_at=now + due_in if due_in is not None else None,
        last_resent_at=now - resent if resent is not None else None,
        resends=1 if resent is not None else 0,
    )
    row.refresh_from_db()
    return row


@pytest.fixture
def ledger_rows() -> dict[str, Delivery]:
    """Six pairs: four not yet terminal of different ages, two at an end."""
    return {
        "old_queued": _delivery(
            Status.QUEUED,
            changed=timedelta(hours=2),
            due_in=timedelta(minutes=-1),
            resent=timedelta(minutes=10),
        ),
        "new_queued": _delivery(
            Status.QUEUED, changed=timedelta(seconds=30), due_in=timedelta(seconds=30)
        ),
        "running": _delivery(
            Status.RUNNING, changed=timedelta(minutes=25), due_in=timedelta(minutes=5)
        ),
        "retrying": _delivery(
            Status.RETRYING, changed=timedelta(minutes=20), due_in=timedelta(seconds=-5)
        ),
        "succeeded": _delivery(
            Status.SUCCEEDED, changed=timedelta(hours=3), resent=timedelta(minutes=30)
        ),
        "dead": _delivery(
            Status.DEAD_LETTERED,
            changed=timedelta(days=2),
            resent=timedelta(hours=2),
            handler="test.other",
        ),
    }


def _listed(client: Client, url: str, query: str | dict[str, str] = "") -> set[uuid.UUID]:
    """Return the event ids the change list shows for ``query``."""
    page = client.get(url + query) if isinstance(query, str) else client.get(url, query)
    assert page.status_code == 200
    return {row.event_id for row in page.context["cl"].result_list}


def _ids(rows: dict[str, Delivery], *names: str) -> set[uuid.UUID]:
    return {rows[name].event_id for name in names}


def test_the_delivery_list_opens_with_the_ledger_summary(
    operator_client: Client, ledger_rows: dict[str, Delivery]
) -> None:
    page = operator_client.get(DELIVERIES)

    assert page.status_code == 200
    panel = page.context["ledger"]
    assert {s["status"]: (s["count"], s["oldest"]) for s in panel["states"]} == {
        "queued": (2, "2 h"),
        "running": (1, "25 min"),
        "retrying": (1, "20 min"),
        "deferred": (0, "—"),
    }
    assert (panel["open_total"], panel["overdue"]) == (4, 2)
    assert (panel["resent"], panel["resent_open"]) == (2, 1)
    html = page.content.decode()
    assert 'id="ledger-queued-count" href="?status__exact=queued">2</a>' in html
    assert 'id="ledger-queued-oldest" href="?status__exact=queued&amp;open_for=any">2 h</a>' in html
    assert 'id="ledger-overdue" href="?reconciler=overdue">2</a>' in html
    assert 'id="ledger-resent" href="?reconciler=resent_1h">2</a>' in html


def test_every_summary_figure_links_to_exactly_the_rows_it_counts(
    operator_client: Client, ledger_rows: dict[str, Delivery]
) -> None:
    html = operator_client.get(DELIVERIES).content.decode()
    figures = re.findall(r'id="ledger-[\w-]+" href="([^"]+)">(\d+)</a>', html)

    assert len(figures) == 8  # four states, all not terminal, overdue, re-sent (and open)
    for query, count in figures:
        assert len(_listed(operator_client, DELIVERIES, query.replace("&amp;", "&"))) == int(
            count
        ), query


def test_the_age_filter_narrows_to_old_unfinished_pairs_oldest_first(
    operator_client: Client, ledger_rows: dict[str, Delivery]
) -> None:
    rows = ledger_rows
    assert _listed(operator_client, DELIVERIES, {"open_for": "1m"}) == _ids(
        rows, "old_queued", "running", "retrying"
    )
    assert _listed(operator_client, DELIVERIES, {"open_for": "1h"}) == _ids(rows, "old_queued")
    assert _listed(operator_client, DELIVERIES, {"open_for": "any"}) == _ids(
        rows, "old_queued", "new_queued", "running", "retrying"
    )

    page = operator_client.get(DELIVERIES, {"open_for": "10m"})
    assert [d.event_id for d in page.context["cl"].result_list] == [
        rows[name].event_id for name in ("old_queued", "running", "retrying")
    ]


def test_the_reconciler_filter_shows_overdue_and_recently_resent_pairs(
    operator_client: Client, ledger_rows: dict[str, Delivery]
) -> None:
    rows = ledger_rows
    assert _listed(operator_client, DELIVERIES, {"reconciler": "overdue"}) == _ids(
        rows, "old_queued", "retrying"
    )
    assert _listed(operator_client, DELIVERIES, {"reconciler": "resent_1h"}) == _ids(
        rows, "old_queued", "succeeded"
    )


def test_the_delivery_list_filters_by_status_and_handler_and_searches(
    operator_client: Client, ledger_rows: dict[str, Delivery]
) -> None:
    rows = ledger_rows
    assert _listed(operator_client, DELIVERIES, {"status__exact": "queued"}) == _ids(
        rows, "old_queued", "new_queued"
    )
    assert _listed(operator_client, DELIVERIES, {"handler__exact": "test.other"}) == _ids(
        rows, "dead"
    )
    running = str(rows["running"].event_id)
    assert _listed(operator_client, DELIVERIES, {"q": running}) == _ids(rows, "running")
    assert _listed(operator_client, DELIVERIES, {"q": "test.oth"}) == _ids(rows, "dead")


def test_ledger_rows_cannot_be_added_changed_or_deleted_from_the_admin(
    operator_client: Client, ledger_rows: dict[str, Delivery]
) -> None:
    row = ledger_rows["running"]
    change = reverse("admin:resilience_delivery_change", args=[row.pk])

    assert operator_client.get(reverse("admin:resilience_delivery_add")).status_code == 403
    assert operator_client.get(change).status_code == 200  # viewing is fine
    assert operator_client.post(change, {"status": "succeeded"}).status_code == 403
    delete = reverse("admin:resilience_delivery_delete", args=[row.pk])
    assert operator_client.post(delete, {"post": "yes"}).status_code == 403
    row.refresh_from_db()
    assert row.status == Status.RUNNING
    assert operator_client.get(DELIVERIES).context["action_form"] is None  # no bulk delete


@pytest.fixture
def outbox_backlog(settings) -> list[Event]:
    """Three events: one published, two waiting, the oldest written three hours ago."""
    settings.OUTBOX_PUBLISH_ON_COMMIT = False
    recorded = [request_job(f"backlog-{n}") for n in range(3)]
    events = [Event.objects.get(event_id=r.event_id) for r in recorded]
    OutboxMessage.objects.filter(event=events[0]).update(published_at=timezone.now())
    OutboxMessage.objects.filter(event=events[1]).update(
        created_at=timezone.now() - timedelta(hours=3)
    )
    return events


def test_the_outbox_list_opens_with_its_backlog(
    operator_client: Client, outbox_backlog: list[Event]
) -> None:
    page = operator_client.get(OUTBOX)

    assert page.status_code == 200
    backlog = page.context["backlog"]
    assert (backlog["unpublished"], backlog["oldest_age"]) == (2, "3 h")
    html = page.content.decode()
    assert 'id="outbox-unpublished" href="?published_at__isempty=1">2</a>' in html
    assert 'id="outbox-oldest" href="?published_at__isempty=1">3 h</a>' in html

    waiting = operator_client.get(OUTBOX, {"published_at__isempty": "1"})
    assert [m.event_id for m in waiting.context["cl"].result_list] == [
        e.position for e in outbox_backlog[1:]
    ]


def test_an_empty_outbox_shows_no_oldest_row(operator_client: Client) -> None:
    OutboxMessage.objects.filter(published_at__isnull=True).update(published_at=timezone.now())

    backlog = operator_client.get(OUTBOX).context["backlog"]

    assert (backlog["unpublished"], backlog["oldest_created_at"], backlog["oldest_age"]) == (
        0,
        None,
        "—",
    )


def test_the_event_log_and_the_outbox_cannot_be_changed_from_the_admin(
    operator_client: Client, outbox_backlog: list[Event]
) -> None:
    event = outbox_backlog[1]
    message = OutboxMessage.objects.get(event=event)
    for model, pk in (("event", event.position), ("outboxmessage", message.pk)):
        change = reverse(f"admin:eventstore_{model}_change", args=[pk])
        assert operator_client.get(reverse(f"admin:eventstore_{model}_add")).status_code == 403
        assert operator_client.post(change, {}).status_code == 403
        delete = reverse(f"admin:eventstore_{model}_delete", args=[pk])
        assert operator_client.post(delete, {"post": "yes"}).status_code == 403
    message.refresh_from_db()
    assert message.published_at is None
    assert Event.objects.filter(position=event.position).exists()
