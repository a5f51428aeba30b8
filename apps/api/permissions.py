"""Who may use the ops API: staff read; acting needs the operator's permission."""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import SAFE_METHODS, IsAdminUser
from rest_framework.request import Request


class StaffReadOperatorsAct(IsAdminUser):
    """Staff may read (401 without credentials, 403 for anyone else); a command (any
    unsafe method) also needs the view's ``operator_permission``, which the "operator"
    group holds and the "viewer" group doesn't, as in the console; an action named in the
    view's ``action_permissions`` needs that permission instead."""

    def has_permission(self, request: Request, view: Any) -> bool:
        if not super().has_permission(request, view):
            return False
        if request.method in SAFE_METHODS:
            return True
        needed = getattr(view, "action_permissions", {}).get(view.action, view.operator_permission)
        return bool(request.user.has_perm(needed))
