"""Forms of the dead-letter console: a group's triage, and a letter's edited payload."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib.auth import get_user_model

from apps.resilience.models import DeadLetter, Triage
from apps.resilience.services import payload_edit


class TriageForm(forms.Form):
    """Change a group's triage: a new status, an assignee, a note (each optional)."""

    status = forms.ChoiceField(
        choices=[("", "(unchanged)"), *Triage.Status.choices], required=False
    )
    assignee = forms.ModelChoiceField(
        queryset=get_user_model().objects.filter(is_staff=True, is_active=True),
        required=False,
        empty_label="(unchanged)",
    )
    unassign = forms.BooleanField(required=False)
    notes = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False)


class PayloadForm(forms.Form):
    """The payload a retry will use: JSON the event's schema accepts, or a form error."""

    payload = forms.CharField(widget=forms.Textarea(attrs={"rows": 16, "cols": 90}))

    def __init__(self, *args: Any, letter: DeadLetter, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.letter = letter

    def clean_payload(self) -> Any:
        """Return the payload parsed and checked the way the replay will decode it."""
        try:
            data = json.loads(self.cleaned_data["payload"])
        except ValueError as exc:
            raise forms.ValidationError(f"not valid JSON: {exc}") from exc
        try:
            payload_edit.validate(self.letter, data)
        except payload_edit.InvalidPayload as exc:
            raise forms.ValidationError(f"the event's schema refuses it: {exc}") from exc
        return data
