"""GET /metrics: Prometheus figures read from the shared stores, for staff or a token only."""

from __future__ import annotations

import uuid

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from apps.eventstore import projections
from apps.eventstore.models import Event
from apps.resilience.breakers import CircuitBreaker, State
from apps.resilience.models import Attempt, DeadLetter, Delivery
from apps.sagas.models import SagaInstance
from tests.resilience.conftest import request_job, wait_for_status
from tests.resilience.handlers import script
from tests.support.worker import WorkerProcess

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _staff_client() -> Client:
    user = get_user_model().objects.create_user("stella", password="pw-stella-1", is_staff=True)
    client = Client()
    client.force_login(user)
    return client


def _samples(response) -> Samples:
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


def _value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


@pytest.mark.django_db
def test_anonymous_scrapers_get_a_401_and_no_figure() -> None:
    response = Client().get("/metrics")
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert b"backstop_" not in response.content


@pytest.mark.django_db
def test_a_signed_in_user_who_is_not_staff_is_refused() -> None:
    user = get_user_model().objects.create_user("alice", password="pw-alice-1")
    client = Client()
    client.force_login(user)
    response = client.get("/metrics")
    assert response.status_code == 403
    assert b"backstop_" not in response.content


@pytest.mark.django_db
def test_the_metrics_token_works_and_a_wrong_one_is_refused(settings) -> None:
    settings.METRICS_TOKEN = "scrape-me-4f1c"
    good = Client().get("/metrics", headers={"Authorization": "Bearer scrape-me-4f1c"})
    assert _value(_samples(good), "backstop_outbox_unpublished") == 0
    wrong = Client().get("/metrics", headers={"Authorization": "Bearer scrape-me-4f1d"})
    assert wrong.status_code == 403
    assert b"backstop_" not in wrong.content


@pytest.mark.django_db
def test_without_a_metrics_token_no_bearer_token_is_accepted(settings) -> None:
    settings.METRICS_TOKEN = ""
    response = Client().get("/metrics", headers={"Authorization": "Bearer "})
    assert response.status_code == 403
    assert _staff_client().get("/metrics").status_code == 200


def _delivery(handler: str, status: str) -> Delivery:
    return Delivery.objects.create(handler=handler, event_id=uuid.uuid4(), status=status)


def _letter(kind: str, severity: str, status: str) -> DeadLetter:
    now = timezone.now()
    return DeadLetter.objects.create(
        handler="test.metrics",
        event_id=uuid.uuid4(),
        kind=kind,
        severity=severity,
        status=status,
        exception_type="X",
        fingerprint="metrics",
        first_failed_at=now,
        last_failed_at=now,
    )


@pytest.mark.django_db
def test_the_figures_are_read_from_the_database_and_the_cache() -> None:
    for status in ("succeeded", "succeeded", "retrying", "queued"):
        _delivery("test.metrics", status)
    failed = _delivery("test.metrics", "dead_lettered")
    for outcome in ("retry", "retry", "dead_letter"):
        Attempt.objects.create(
            delivery=failed, number=1, kind="timeout", exception_type="X", outcome=outcome
        )
    _letter("timeout", "medium", "pending")
    _letter("timeout", "medium", "pending")
    _letter("system", "critical", "resolved")
    SagaInstance.objects.create(
        type="metrics-trip",
        state="failed",
        correlation_id=uuid.uuid4(),
        trigger_event_id=uuid.uuid4(),
    )
    request_job("metrics")  # an event and its unpublished outbox row (no commit here)
    breaker = f"metrics-{uuid.uuid4().hex[:8]}"
    CircuitBreaker(breaker).force(State.FORCED_OPEN, reason="test")

    samples = _samples(_staff_client().get("/metrics"))

    def value(name: str, **labels: str) -> float | None:
        return _value(samples, name, **labels)

    top = Event.objects.order_by("-position").first()
    assert top is not None
    assert value("backstop_events_appended_total") == top.position
    assert value("backstop_deliveries", handler="test.metrics", status="succeeded") == 2
    assert value("backstop_deliveries", handler="test.metrics", status="dead_lettered") == 1
    assert value("backstop_ledger_not_terminal", status="retrying") == 1
    assert value("backstop_ledger_not_terminal", status="running") == 0
    assert value("backstop_delivery_attempts", kind="timeout", outcome="retry") == 2
    assert value("backstop_delivery_attempts", kind="timeout", outcome="dead_letter") == 1
    letters = {"kind": "timeout", "status": "pending", "severity": "medium"}
    assert value("backstop_dead_letters", **letters) == 2
    assert (
        value("backstop_dead_letters", kind="system", status="resolved", severity="critical") == 1
    )
    assert value("backstop_sagas", type="metrics-trip", state="failed") == 1
    assert value("backstop_breaker_state", breaker=breaker, state="forced_open") == 1
    assert value("backstop_breaker_state", breaker=breaker, state="closed") == 0
    assert value("backstop_breakers_known") == 1
    assert value("backstop_outbox_unpublished") == 1
    assert (value("backstop_outbox_oldest_unpublished_seconds") or 0) >= 0
    for name in projections.names():
        assert value("backstop_projection_lag", projection=name) == projections.lag(name)


@pytest.mark.django_db(transaction=True)
def test_a_scripted_failure_on_a_worker_shows_in_the_metrics(worker: WorkerProcess) -> None:
    script("metrics-bad", "validation")
    recorded = request_job("metrics-bad")
    wait_for_status("test.scripted", recorded, Delivery.Status.DEAD_LETTERED)

    samples = _samples(_staff_client().get("/metrics"))

    dead = {"handler": "test.scripted", "status": "dead_lettered"}
    assert _value(samples, "backstop_deliveries", **dead) == 1
    letters = {"kind": "validation", "status": "pending", "severity": "medium"}
    assert _value(samples, "backstop_dead_letters", **letters) == 1
    attempts = {"kind": "validation", "outcome": "dead_letter"}
    assert _value(samples, "backstop_delivery_attempts", **attempts) == 1
    assert (_value(samples, "backstop_events_appended_total") or 0) >= recorded.position
