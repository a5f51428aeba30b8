"""The circuit breakers page: every breaker's live state; reset and force it, audited.

The audit is the breaker's own transition record (``BreakerTransition``): the operator as
``actor``, the action and their notes as ``reason``, the state it moved to and when.
"""

from __future__ import annotations

from typing import cast

from django.contrib import messages
from django.contrib.auth.models import User
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from apps.console.ops_admin.pages import page_context, require_permission
from apps.resilience.breaker_status import breaker_statuses, known_breakers
from apps.resilience.breakers import CircuitBreaker, State
from apps.resilience.models import BreakerTransition

# The operator's permission to change a breaker (held by superusers and the operator group).
CHANGE_PERMISSION = "resilience.change_breakertransition"
ACTIONS = {
    "reset": "close it now and forget its failures",
    "force-open": "hold every call until reset",
    "force-closed": "let every call through until reset",
}


@require_http_methods(["GET", "HEAD", "POST"])
def breakers_page(request: HttpRequest) -> HttpResponse:
    """Show every known breaker's live state; a POST resets or forces one."""
    if request.method == "POST":
        return _change(request)
    context = page_context(
        request,
        "Circuit breakers",
        breakers=breaker_statuses(),
        actions=ACTIONS,
        can_change=request.user.has_perm(CHANGE_PERMISSION),
        transitions=BreakerTransition.objects.select_related("actor")[:20],
    )
    return render(request, "admin/console/breakers.html", context)


def _change(request: HttpRequest) -> HttpResponse:
    require_permission(request, CHANGE_PERMISSION)
    name, action = request.POST.get("name", ""), request.POST.get("action", "")
    if action not in ACTIONS or name not in known_breakers():
        return HttpResponseBadRequest("unknown breaker or action")
    notes = request.POST.get("notes", "").strip()
    reason = f"{action} from the console" + (f": {notes}" if notes else "")
    actor = cast(User, request.user)  # admin_view let only a logged-in staff user in
    apply_action(CircuitBreaker(name), action, actor=actor, reason=reason)
    messages.success(request, f"{name}: {action} done.")
    return redirect(request.path)


def apply_action(breaker: CircuitBreaker, action: str, *, actor: User, reason: str) -> None:
    """Reset or force ``breaker`` as ``actor``; the breaker records the transition."""
    if action == "reset":
        breaker.reset(actor=actor, reason=reason)
    else:
        forced = State.FORCED_OPEN if action == "force-open" else State.FORCED_CLOSED
        breaker.force(forced, actor=actor, reason=reason)
