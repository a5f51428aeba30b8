"""The front page and the operational endpoints: health and readiness (open to all), and
the Prometheus metrics (a staff session or the metrics token)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe
from django.views.defaults import page_not_found
from prometheus_client import CONTENT_TYPE_LATEST

from apps.api.errors import error_body
from apps.console import metrics as metrics_export
from apps.console.health import report
from apps.console.operator import OPERATOR_USERNAME


@require_safe
def front_page(request: HttpRequest) -> HttpResponse:
    """Return the front page: what Backstop is, where the console, the API docs and the
    probes are, and the first API calls with this server's own address."""
    context = {"base": request.build_absolute_uri("/"), "operator": OPERATOR_USERNAME}
    return render(request, "console/front_page.html", context)


@never_cache
@require_safe
def health(request: HttpRequest) -> HttpResponse:
    """Liveness: 200 whenever this process answers, with the report of every store and
    process; its ``status`` says ``ok``, ``degraded`` or ``unavailable``."""
    return _answer(request, report(), status=200)


@never_cache
@require_safe
def ready(request: HttpRequest) -> HttpResponse:
    """Readiness: the same report, 200 when nothing fails, else 503 naming the ``failing``
    stores and processes (a worker or beat whose heartbeat is missing or stale)."""
    body = report()
    return _answer(request, body, status=503 if body["failing"] else 200)


@never_cache
@require_safe
def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus metrics for a staff session or the ``METRICS_TOKEN`` bearer token: 401
    without credentials, 403 with wrong ones, and not a figure either way."""
    allowed = metrics_export.may_scrape(request)
    if allowed is None:
        response = HttpResponse("authentication required\n", status=401, content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    if not allowed:
        return HttpResponse("forbidden\n", status=403, content_type="text/plain")
    return HttpResponse(metrics_export.render(), content_type=CONTENT_TYPE_LATEST)


def _answer(request: HttpRequest, body: dict[str, object], *, status: int) -> HttpResponse:
    """Return ``body`` as JSON, or for HEAD the status alone: gunicorn drops a HEAD
    response's body anyway, logging a warning for every probe that gets one."""
    if request.method == "HEAD":
        return HttpResponse(status=status, content_type="application/json")
    return JsonResponse(body, status=status)


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """A 404 for an unknown URL: JSON in the error shape under /api/, Django's page elsewhere."""
    if request.path.startswith("/api/"):
        return JsonResponse(error_body("not_found", "Not found."), status=404)
    return page_not_found(request, exception)
