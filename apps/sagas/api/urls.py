"""The ops API's routes: /ops/sagas/, a saga, and its resume/ and compensate/ commands."""

from __future__ import annotations

from rest_framework.routers import SimpleRouter

from apps.sagas.api.views import SagaViewSet

router = SimpleRouter(use_regex_path=False)  # path converters: a bad uuid is a 404
router.register("ops/sagas", SagaViewSet, basename="ops-saga")

urlpatterns = router.urls
