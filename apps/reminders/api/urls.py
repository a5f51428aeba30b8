"""The reminders' routes: one ViewSet, its actions mapped by hand (two URL prefixes).

Each route keeps the name its OPTIONS answer has always given (``name=``).
"""

from __future__ import annotations

from django.urls import path

from apps.reminders.api.views import ReminderViewSet

todo_reminders = ReminderViewSet.as_view({"get": "list", "post": "create"}, name="Todo Reminders")
snooze = ReminderViewSet.as_view({"post": "snooze"}, name="Snooze")
reminder = ReminderViewSet.as_view({"delete": "destroy"}, name="Reminder")

urlpatterns = [
    path("todos/<uuid:todo_id>/reminders/", todo_reminders, name="todo-reminders"),
    path("reminders/<uuid:reminder_id>/snooze/", snooze, name="reminder-snooze"),
    path("reminders/<uuid:reminder_id>/", reminder, name="reminder"),
]
