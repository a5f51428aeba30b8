"""Unauthenticated operational endpoints."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from django.views.defaults import page_not_found

from apps.console.health import overall_status, run_checks
from apps.resilience.http import error_body


@never_cache
@require_GET
def health(request: HttpRequest) -> JsonResponse:
    """Return 200 ``ok`` when every store answers; otherwise 503, ``degraded`` or
    ``unavailable`` (see ``overall_status``), naming the ``failing`` stores."""
    checks = run_checks()
    failing = [name for name, result in checks.items() if not result["ok"]]
    return JsonResponse(
        {"status": overall_status(failing), "failing": failing, "checks": checks},
        status=503 if failing else 200,
    )


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """A 404 for an unknown URL: JSON in the error shape under /api/, Django's page elsewhere."""
    if request.path.startswith("/api/"):
        return JsonResponse(error_body("not_found", "Not found."), status=404)
    return page_not_found(request, exception)
