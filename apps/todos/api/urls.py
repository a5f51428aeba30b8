from __future__ import annotations

from rest_framework.routers import SimpleRouter

from apps.todos.api.views import TodoViewSet

router = SimpleRouter()
router.register("todos", TodoViewSet, basename="todo")

urlpatterns = router.urls
