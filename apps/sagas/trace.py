"""The sagas' rows in a correlation trace (``apps.resilience.services.trace``)."""

from __future__ import annotations

import uuid

from apps.resilience.services.trace import TraceEntry, register_source
from apps.sagas.models import SagaStep


@register_source
def saga_steps(correlation_id: uuid.UUID) -> list[TraceEntry]:
    """Return the steps of the sagas of ``correlation_id`` as trace rows."""
    steps = SagaStep.objects.filter(saga__correlation_id=correlation_id).select_related("saga")
    return [
        TraceEntry(
            step.finished_at,
            f"saga step {step.step} ({step.phase}) #{step.attempt}",
            f"{step.saga.type} {step.saga_id}",
            step.status,
        )
        for step in steps
    ]
