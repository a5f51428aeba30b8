"""Prometheus metrics, computed from the database and the cache at scrape time.

Every figure is read when ``/metrics`` is scraped, by aggregate queries over the shared
database (and the breakers' state in the shared cache), not counted in the memory of the
process that happened to do the work. So the answer is the same whichever web process
serves the scrape, however many web and worker processes there are: multi-process correct
by construction, with no ``PROMETHEUS_MULTIPROC_DIR`` to manage. Figures are gauges where a
row can leave them (retention prunes deliveries, attempts and dead letters).

A scrape costs a fixed handful of grouped queries, plus one count per projection and a
few cache reads per breaker; no loop over rows.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import redis
from django.conf import settings
from django.db.models import Count, Max
from django.http import HttpRequest
from django.utils import timezone
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from apps.eventstore import projections
from apps.eventstore.models import Event, ProjectionState
from apps.eventstore.outbox_stats import backlog
from apps.resilience.breaker_status import known_breakers
from apps.resilience.breakers import CircuitBreaker, State
from apps.resilience.models import Attempt, DeadLetter, Delivery
from apps.resilience.services.ledger import NOT_TERMINAL
from apps.sagas.models import SagaInstance

logger = logging.getLogger(__name__)


class BackstopCollector(Collector):
    """Yield Backstop's figures as metric families, read from the stores at each scrape."""

    def collect(self) -> Iterator[Metric]:
        yield _events_appended()
        yield from _deliveries()
        yield _attempts()
        yield _dead_letters()
        yield from _breakers()
        yield _sagas()
        yield _projection_lag()
        yield from _outbox()


def render() -> bytes:
    """Return the metrics in Prometheus' text format, from a registry of this collector only
    (no process or platform collectors: their figures would be one process's)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BackstopCollector())
    return generate_latest(registry)


def may_scrape(request: HttpRequest) -> bool | None:
    """Return True for a staff session or the ``METRICS_TOKEN`` bearer token, None for a
    request without credentials, False for wrong ones (a token that doesn't match, or
    a signed-in user who isn't staff)."""
    header = request.headers.get("Authorization", "")
    token = settings.METRICS_TOKEN
    if header.startswith("Bearer "):
        offered = header.removeprefix("Bearer ").strip().encode()
        return bool(token) and hmac.compare_digest(offered, token.encode())
    user = request.user
    if user.is_authenticated:
        return bool(user.is_staff and user.is_active)
    return None


def _events_appended() -> Metric:
    # The log's highest position: an index lookup, where counting rows would scan them all.
    # A rolled-back append leaves a gap in the positions, so this may run ahead by as many.
    metric = CounterMetricFamily(
        "backstop_events_appended", "Events appended to the log (its highest position)."
    )
    metric.add_metric([], Event.objects.aggregate(top=Max("position"))["top"] or 0)
    return metric


def _grouped(rows: Iterable[Mapping[str, Any]], *labels: str) -> list[tuple[list[str], int]]:
    """Return (label values, count) of each row of a ``values(...).annotate(n=Count())``."""
    return [([str(row[label]) for label in labels], row["n"]) for row in rows]


def _deliveries() -> Iterator[Metric]:
    rows = _grouped(
        Delivery.objects.order_by().values("handler", "status").annotate(n=Count("pk")),
        "handler",
        "status",
    )
    by_pair = GaugeMetricFamily(
        "backstop_deliveries",
        "Deliveries in the ledger by handler and status (succeeded ones are pruned with age).",
        labels=["handler", "status"],
    )
    open_by_status: dict[str, int] = dict.fromkeys(NOT_TERMINAL, 0)
    for (handler, status), n in rows:
        by_pair.add_metric([handler, status], n)
        if status in open_by_status:
            open_by_status[status] += n
    yield by_pair
    not_terminal = GaugeMetricFamily(
        "backstop_ledger_not_terminal",
        "Ledger deliveries not yet at an end, by status.",
        labels=["status"],
    )
    for status, n in open_by_status.items():
        not_terminal.add_metric([str(status)], n)
    yield not_terminal


def _attempts() -> Metric:
    metric = GaugeMetricFamily(
        "backstop_delivery_attempts",
        "Failed delivery attempts by error kind and what followed (retry, defer, dead letter).",
        labels=["kind", "outcome"],
    )
    rows = Attempt.objects.order_by().values("kind", "outcome").annotate(n=Count("pk"))
    for labels, n in _grouped(rows, "kind", "outcome"):
        metric.add_metric(labels, n)
    return metric


def _dead_letters() -> Metric:
    metric = GaugeMetricFamily(
        "backstop_dead_letters",
        "Dead letters by error kind, status and severity.",
        labels=["kind", "status", "severity"],
    )
    rows = DeadLetter.objects.order_by().values("kind", "status", "severity")
    for labels, n in _grouped(rows.annotate(n=Count("pk")), "kind", "status", "severity"):
        metric.add_metric(labels, n)
    return metric


def _breakers() -> Iterator[Metric]:
    """One series per breaker and state, 1 for the state it is in (a Prometheus state set).
    With the cache unreachable the states are unknown: only ``backstop_breakers_known`` 0."""
    known = GaugeMetricFamily(
        "backstop_breakers_known", "1 when the breakers' states could be read from the cache."
    )
    try:
        states = {name: CircuitBreaker(name).snapshot().state for name in known_breakers()}
    except (redis.RedisError, OSError):
        logger.warning("metrics: breaker states unreadable, the cache is down", exc_info=True)
        known.add_metric([], 0)
        yield known
        return
    known.add_metric([], 1)
    yield known
    metric = GaugeMetricFamily(
        "backstop_breaker_state",
        "Circuit breaker state (1: the current one).",
        labels=["breaker", "state"],
    )
    for name, current in sorted(states.items()):
        for state in State:
            metric.add_metric([name, state.value], 1 if state is current else 0)
    yield metric


def _sagas() -> Metric:
    metric = GaugeMetricFamily(
        "backstop_sagas", "Sagas by type and state.", labels=["type", "state"]
    )
    rows = SagaInstance.objects.order_by().values("type", "state").annotate(n=Count("pk"))
    for labels, n in _grouped(rows, "type", "state"):
        metric.add_metric(labels, n)
    return metric


def _projection_lag() -> Metric:
    """Events of each projection's types past its checkpoint (read only: a projection with
    no checkpoint row yet counts from position 0)."""
    metric = GaugeMetricFamily(
        "backstop_projection_lag",
        "Events a projection reads that are past its checkpoint.",
        labels=["projection"],
    )
    names = projections.names()
    checkpoints = dict(
        ProjectionState.objects.filter(name__in=names).values_list("name", "position")
    )
    for name in names:
        types = projections.projection(name).event_types
        behind = Event.objects.filter(type__in=types, position__gt=checkpoints.get(name, 0))
        metric.add_metric([name], behind.count())
    return metric


def _outbox() -> Iterator[Metric]:
    figures = backlog(now=timezone.now())
    unpublished = GaugeMetricFamily(
        "backstop_outbox_unpublished", "Outbox rows not yet published to the broker."
    )
    unpublished.add_metric([], figures["unpublished"])
    yield unpublished
    oldest = GaugeMetricFamily(
        "backstop_outbox_oldest_unpublished_seconds",
        "Age of the oldest unpublished outbox row (0 when none waits).",
    )
    oldest.add_metric([], figures["oldest_seconds"] or 0.0)
    yield oldest
