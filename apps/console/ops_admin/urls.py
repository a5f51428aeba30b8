"""The console's own admin pages, mounted at ``admin/console/`` before the admin's URLs."""

from __future__ import annotations

from django.contrib import admin
from django.urls import path

from apps.console.ops_admin.breakers import breakers_page
from apps.console.ops_admin.projections import projections_page

app_name = "console-admin"
urlpatterns = [
    path("breakers/", admin.site.admin_view(breakers_page), name="breakers"),
    path("projections/", admin.site.admin_view(projections_page), name="projections"),
]
