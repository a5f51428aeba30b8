"""Celery entry point of the reminders: the due-reminder sweep that beat runs."""

from __future__ import annotations

from celery import shared_task

from apps.reminders import services


@shared_task(name="backstop.reminders.fire_due")
def fire_due_reminders() -> int:
    """Trigger every reminder that is due."""
    return services.fire_due_reminders()
