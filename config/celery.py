"""The Celery app: configured from Django settings (the ``CELERY_`` names), tasks autodiscovered."""

from __future__ import annotations

import os
from typing import Any

from celery import Celery, Task
from celery.signals import task_postrun, task_prerun

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("backstop")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
# Each worker records its heartbeat for /health/ (by name: the module needs Django set up).
app.steps["worker"].add("apps.console.worker_heartbeat:WorkerHeartbeat")


@task_prerun.connect
@task_postrun.connect
def _close_old_connections(task: Task | None = None, **kwargs: Any) -> None:
    """Around each task, what Django does around each request: close a database connection
    that is broken or older than ``CONN_MAX_AGE`` (with health checks) and keep the rest.

    Celery's own Django fix-up closes every connection before and after every task unless
    ``CELERY_DB_REUSE_MAX`` is set, which costs each task a new PostgreSQL connection. The
    settings set it, so this handler is what keeps a worker's connections healthy.
    """
    if task is not None and getattr(task.request, "is_eager", False):
        return  # an eager call runs inside its caller's request and transaction
    from django.db import close_old_connections

    close_old_connections()
