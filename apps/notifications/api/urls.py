"""The notifications' routes, each ViewSet's actions mapped by hand (/me/ has no id).

Each route keeps the name its OPTIONS answer has always given (``name=``).
"""

from __future__ import annotations

from django.urls import path

from apps.notifications.api.views import MeViewSet, NotificationViewSet

me = MeViewSet.as_view({"get": "retrieve", "patch": "partial_update"}, name="Me")
notifications = NotificationViewSet.as_view({"get": "list"}, name="Notification List")

urlpatterns = [
    path("me/", me, name="me"),
    path("notifications/", notifications, name="notifications"),
]
