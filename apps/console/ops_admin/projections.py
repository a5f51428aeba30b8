"""The projections page: checkpoint, lag and last error of each read model; rebuild it.

The rebuild runs as a Celery task on the maintenance queue, sent once the request's
transaction commits; ``apps.eventstore.rebuild_progress`` refuses a second one while the
first is queued or running, and keeps the progress this page shows.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.admin.models import CHANGE, LogEntry
from django.db.models import Max
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_http_methods

from apps.console.ops_admin.pages import page_context, require_permission
from apps.eventstore import projections, rebuild_progress
from apps.eventstore.models import Event, ProjectionState
from apps.resilience.models import DeadLetter

# Rebuilding a read model is an operator's act (held by superusers and the operator group).
REBUILD_PERMISSION = "eventstore.change_projectionstate"


@require_http_methods(["GET", "HEAD", "POST"])
def projections_page(request: HttpRequest) -> HttpResponse:
    """Show each registered projection's state; a POST asks for a rebuild of one."""
    if request.method == "POST":
        return _rebuild(request)
    head = Event.objects.aggregate(head=Max("position"))["head"] or 0
    context = page_context(
        request,
        "Projections",
        projections=[projection_row(name, head) for name in projections.names()],
        head=head,
        can_rebuild=request.user.has_perm(REBUILD_PERMISSION),
    )
    return render(request, "admin/console/projections.html", context)


def projection_row(name: str, head: int) -> dict[str, Any]:
    """Return what the page shows of projection ``name``, the log's head being ``head``."""
    state = ProjectionState.objects.filter(name=name).first() or ProjectionState(name=name)
    behind = Event.objects.filter(
        type__in=projections.projection(name).event_types, position__gt=state.position
    )
    oldest = behind.order_by("position").values_list("recorded_at", flat=True).first()
    return {
        "name": name,
        "state": state,
        "head": head,
        "lag_events": behind.count(),
        "lag_seconds": (timezone.now() - oldest).total_seconds() if oldest else 0.0,
        "last_error": _latest_dead_letter(name),
        "rebuild": rebuild_progress.progress(name),
        "rebuild_locked": rebuild_progress.is_locked(name) or state.rebuilding is not None,
    }


def request_rebuild(name: str, *, actor: Any, via: str) -> bool:
    """Queue a rebuild of projection ``name`` and record who asked, in Django's admin log
    (actor, projection, time, from where); ``False`` (nothing queued or logged) while
    another is queued or running."""
    if not rebuild_progress.queue_rebuild(name):
        return False
    state, _ = ProjectionState.objects.get_or_create(name=name)
    LogEntry.objects.log_actions(
        actor.pk,
        [state],
        CHANGE,
        change_message=f"rebuild requested from {via}",
        single_object=True,
    )
    return True


def _latest_dead_letter(name: str) -> DeadLetter | None:
    """Return the newest dead letter of the projection's live handler (``<name>.projection``)."""
    return DeadLetter.objects.filter(handler=f"{name}.projection").first()


def _rebuild(request: HttpRequest) -> HttpResponse:
    require_permission(request, REBUILD_PERMISSION)
    name = request.POST.get("name", "")
    if name not in projections.names():
        return HttpResponseBadRequest("unknown projection")
    if not request_rebuild(name, actor=request.user, via="the console"):
        messages.error(request, f"{name} is already being rebuilt: wait for it to finish.")
        return redirect(request.path)
    messages.success(request, f"Rebuild of {name} queued.")
    return redirect(request.path)
