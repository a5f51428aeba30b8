"""Backstop's URLs: the admin console, health, the API and its schema."""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from apps.accounts.views import TokenView
from apps.api.errors import api_not_found
from apps.console.views import front_page, health, metrics, ready

admin.site.site_header = "Backstop console"
admin.site.site_title = "Backstop console"
admin.site.site_url = "/"  # "View site": the front page

urlpatterns = [
    path("", front_page, name="front-page"),
    # The console's own pages (breakers, projections): before the admin's catch-all.
    path("admin/console/", include("apps.console.ops_admin.urls")),
    path("admin/", admin.site.urls),
    path("health/", health, name="health"),
    path("ready/", ready, name="ready"),
    path("metrics", metrics, name="metrics"),
    path("api/v1/auth/token/", TokenView.as_view(), name="api-token"),
    path("api/v1/", include("apps.todos.api.urls")),
    path("api/v1/", include("apps.reminders.api.urls")),
    path("api/v1/", include("apps.notifications.api.urls")),
    path("api/v1/", include("apps.sagas.api.urls")),
    path("api/v1/", include("apps.console.api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    # Last: any other /api/ URL is a JSON 404, with DEBUG too (handler404 is only without).
    # Slash-ended only, so APPEND_SLASH still redirects "/api/v1/todos" to the real route;
    # any character in between, a line break too (where "." would stop).
    re_path(r"^api/(?:[\s\S]*/)?$", api_not_found),
]

handler404 = "apps.console.views.not_found"
