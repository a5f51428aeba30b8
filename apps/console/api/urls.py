"""The console's ops API routes, beside /ops/sagas/."""

from __future__ import annotations

from rest_framework.routers import SimpleRouter

from apps.console.api.views import (
    BreakerViewSet,
    DeadLetterViewSet,
    EscalationViewSet,
    FailureGroupViewSet,
    ProjectionViewSet,
)

router = SimpleRouter(use_regex_path=False)  # path converters: a bad id is a 404
router.register("ops/dead-letters", DeadLetterViewSet, basename="ops-dead-letter")
router.register("ops/dead-letter-groups", FailureGroupViewSet, basename="ops-dead-letter-group")
router.register("ops/escalations", EscalationViewSet, basename="ops-escalation")
router.register("ops/breakers", BreakerViewSet, basename="ops-breaker")
router.register("ops/projections", ProjectionViewSet, basename="ops-projection")

urlpatterns = router.urls
