"""``{% console_dashboard as dashboard %}``: the admin index's figures (``apps.console.dashboard``).

A tag, not a custom AdminSite: the index template asks for the figures, so every app's
``admin.site.register`` and the admin's own views stay as Django ships them.
"""

from __future__ import annotations

from typing import Any

from django import template

from apps.console import dashboard

register = template.Library()


@register.simple_tag
def console_dashboard() -> dict[str, Any]:
    """Return the dashboard's figures, computed now."""
    return dashboard.figures()
