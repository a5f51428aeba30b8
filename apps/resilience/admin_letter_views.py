"""The dead-letter console's own pages: failure groups (with triage and group actions),
editing a letter's payload, and a dry run of its handler.

Every page needs the view permission; every POST the operator permission of what it does
(refused with 403 otherwise), and each letter a group action touches is audited by the
service that changes it.
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.views.decorators.http import require_POST

from apps.resilience.admin_forms import PayloadForm, TriageForm
from apps.resilience.models import DeadLetter, Triage
from apps.resilience.services import dead_letters, letter_groups, payload_edit, triage
from apps.resilience.services.dry_run import dry_run

ACT = "resilience.change_deadletter"
TRIAGE = "resilience.change_triage"
EDIT = "resilience.edit_deadletter_payload"
DRY_RUN = "resilience.dry_run_deadletter"

# What each group action did, as its message says it.
DONE = {"retry": "retried", "resolve": "resolved", "discard": "discarded"}


def _require(request: HttpRequest, perm: str) -> None:
    if not request.user.has_perm(perm):
        raise PermissionDenied


class DeadLetterConsoleMixin(admin.ModelAdmin):
    """URLs and views of the console pages, added to ``DeadLetterAdmin``."""

    def get_urls(self) -> list[URLPattern]:
        wrap = self.admin_site.admin_view
        own = [
            path("groups/", wrap(self.groups_view), name="resilience_deadletter_groups"),
            path(
                "groups/<str:fingerprint>/act/",
                wrap(require_POST(self.group_action_view)),
                name="resilience_deadletter_group_action",
            ),
            path(
                "groups/<str:fingerprint>/triage/",
                wrap(require_POST(self.triage_view)),
                name="resilience_deadletter_triage",
            ),
            path(
                "<int:pk>/edit-payload/",
                wrap(self.edit_payload_view),
                name="resilience_deadletter_edit_payload",
            ),
            path(
                "<int:pk>/dry-run/",
                wrap(require_POST(self.dry_run_view)),
                name="resilience_deadletter_dry_run",
            ),
        ]
        return own + super().get_urls()

    def _page(self, request: HttpRequest, template: str, title: str, **context: Any) -> Any:
        _require(request, "resilience.view_deadletter")
        context = {
            **self.admin_site.each_context(request),
            "title": title,
            "opts": self.model._meta,
            **context,
        }
        return TemplateResponse(request, f"admin/resilience/deadletter/{template}", context)

    def groups_view(self, request: HttpRequest) -> HttpResponse:
        """The open failure groups with their triage; buttons for those who may act."""
        return self._page(
            request,
            "groups.html",
            "Dead letter groups",
            rows=letter_groups.rows(),
            target_hours=triage.target().total_seconds() / 3600,
            can_act=request.user.has_perm(ACT),
            can_triage=request.user.has_perm(TRIAGE),
            triage_form=TriageForm(),
            statuses=Triage.Status.choices,
        )

    def group_action_view(self, request: HttpRequest, fingerprint: str) -> HttpResponse:
        """Retry at once; resolve and discard after a confirmation page with notes."""
        _require(request, ACT)
        verb, notes = request.POST.get("verb", ""), request.POST.get("notes", "").strip()
        if verb not in DONE:
            return HttpResponseBadRequest("verb must be retry, resolve or discard")
        if verb != "retry" and ("confirm" not in request.POST or not notes):
            letters = DeadLetter.objects.filter(fingerprint=fingerprint, status__in=DeadLetter.OPEN)
            return self._page(
                request,
                "group_confirm.html",
                f"{verb.capitalize()} a dead letter group",
                verb=verb,
                fingerprint=fingerprint,
                letters=letters,
                missing_notes="confirm" in request.POST,
            )
        outcome = self._act(request, verb, fingerprint, notes)
        if outcome is not None:
            self.message_user(
                request, f"{outcome.done} dead letter(s) {DONE[verb]}.", messages.SUCCESS
            )
            for reason in outcome.refused[:10]:
                self.message_user(request, reason, messages.WARNING)
            if outcome.remaining:
                self.message_user(
                    request,
                    f"{outcome.remaining} more not reached in this pass: {verb} the group again.",
                    messages.WARNING,
                )
        return HttpResponseRedirect(reverse("admin:resilience_deadletter_groups"))

    def _act(
        self, request: HttpRequest, verb: str, fingerprint: str, notes: str
    ) -> letter_groups.GroupOutcome | None:
        try:
            if verb == "retry":
                return letter_groups.retry_group(fingerprint, actor=request.user)
            if verb == "resolve":
                return letter_groups.resolve_group(fingerprint, actor=request.user, notes=notes)
            return letter_groups.discard_group(fingerprint, actor=request.user, reason=notes)
        except dead_letters.DeadLetterStateError as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return None

    def triage_view(self, request: HttpRequest, fingerprint: str) -> HttpResponse:
        """Apply the small triage form of a group; an invalid move is reported, not applied."""
        _require(request, TRIAGE)
        form = TriageForm(request.POST)
        if not form.is_valid():
            self.message_user(request, f"Invalid triage change: {form.errors}", messages.ERROR)
        else:
            data = form.cleaned_data
            try:
                triage.change(
                    fingerprint,
                    actor=request.user,
                    status=data["status"] or None,
                    assignee=data["assignee"],
                    unassign=data["unassign"],
                    notes=data["notes"],
                )
                self.message_user(request, "Triage updated.", messages.SUCCESS)
            except triage.TriageTransitionError as exc:
                self.message_user(request, str(exc), messages.ERROR)
        return HttpResponseRedirect(reverse("admin:resilience_deadletter_groups"))

    def edit_payload_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        """Show the payload form; a valid POST stores the edit, audits it and retries."""
        _require(request, EDIT)
        letter = get_object_or_404(DeadLetter, pk=pk)
        current = letter.edited_payload if letter.edited_payload is not None else letter.payload
        form = PayloadForm(
            request.POST or None,
            letter=letter,
            initial={"payload": json.dumps(current, indent=2, sort_keys=True)},
        )
        if request.method == "POST" and form.is_valid():
            try:
                payload_edit.edit_and_retry(
                    letter.pk, actor=request.user, payload=form.cleaned_data["payload"]
                )
            except dead_letters.DeadLetterStateError as exc:
                form.add_error(None, str(exc))
            else:
                self.message_user(request, "Payload edited; retry queued.", messages.SUCCESS)
                return HttpResponseRedirect(_change_url(letter.pk))
        return self._page(
            request,
            "edit_payload.html",
            f"Edit the payload of #{letter.pk}",
            letter=letter,
            form=form,
        )

    def dry_run_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        """Run the letter's handler in a rolled-back transaction; show what it would do."""
        _require(request, DRY_RUN)
        letter = get_object_or_404(DeadLetter, pk=pk)
        report = dry_run(letter.pk)
        return self._page(
            request,
            "dry_run.html",
            f"Dry run of #{letter.pk}",
            letter=letter,
            report=report,
            change_url=_change_url(letter.pk),
        )


def _change_url(pk: int) -> str:
    return reverse("admin:resilience_deadletter_change", args=[pk])
