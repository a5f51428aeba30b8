"""Unauthenticated operational endpoints."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from apps.console.health import run_checks


@never_cache
@require_GET
def health(request: HttpRequest) -> JsonResponse:
    """Return 200 when every store answers, 503 with the failing checks otherwise."""
    checks = run_checks()
    healthy = all(result["ok"] for result in checks.values())
    return JsonResponse(
        {"status": "ok" if healthy else "unavailable", "checks": checks},
        status=200 if healthy else 503,
    )
