from __future__ import annotations

from django.urls import path

from apps.notifications.api.views import MeView, NotificationListView

urlpatterns = [
    path("me/", MeView.as_view(), name="me"),
    path("notifications/", NotificationListView.as_view(), name="notifications"),
]
