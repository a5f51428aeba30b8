from __future__ import annotations

from rest_framework.routers import SimpleRouter

from apps.todos.api.views import TodoViewSet

router = SimpleRouter(use_regex_path=False)  # path converters: a bad uuid is a 404
router.register("todos", TodoViewSet, basename="todo")

urlpatterns = router.urls
