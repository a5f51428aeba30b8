from __future__ import annotations

from django.urls import path

from apps.reminders.api.views import ReminderView, SnoozeView, TodoRemindersView

urlpatterns = [
    path("todos/<uuid:todo_id>/reminders/", TodoRemindersView.as_view(), name="todo-reminders"),
    path("reminders/<uuid:reminder_id>/snooze/", SnoozeView.as_view(), name="reminder-snooze"),
    path("reminders/<uuid:reminder_id>/", ReminderView.as_view(), name="reminder"),
]
