"""What the console keeps: the heartbeats of the worker and beat processes."""

from __future__ import annotations

from django.db import models


class Heartbeat(models.Model):
    """The latest sign of life of one worker or beat process, written by the process itself
    every ``HEARTBEAT_SECONDS`` (``apps.console.heartbeats``): one row per (kind, hostname),
    overwritten in place."""

    class Kind(models.TextChoices):
        WORKER = "worker"
        BEAT = "beat"

    kind = models.CharField(max_length=10, choices=Kind.choices)
    # A worker's node name (celery@host), or beat's host name.
    hostname = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    # By the database's clock, as is every age computed from it: hosts' clocks never skew it.
    last_seen = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["kind", "hostname"], name="one_heartbeat_per_process"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.hostname} (pid {self.pid})"
