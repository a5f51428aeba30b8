"""Reads of sagas for operators: the list, filtered, and one saga with its logs."""

from __future__ import annotations

import uuid

from django.db.models import Prefetch, QuerySet

from apps.sagas.models import SagaAction, SagaInstance
from apps.sagas.services import SagaNotFound


def sagas(
    *, state: str | None = None, saga_type: str | None = None, subject_id: uuid.UUID | None = None
) -> QuerySet[SagaInstance]:
    """Return the sagas matching every filter given, unordered (the API's paging orders
    them); ``None`` filters nothing."""
    found = SagaInstance.objects.all()
    if state is not None:
        found = found.filter(state=state)
    if saga_type is not None:
        found = found.filter(type=saga_type)
    if subject_id is not None:
        found = found.filter(subject_id=subject_id)
    return found


def saga(saga_id: uuid.UUID) -> SagaInstance:
    """Return the saga with its steps and operator actions (each actor loaded) prefetched;
    raise ``SagaNotFound`` if there is none."""
    actions = Prefetch("actions", queryset=SagaAction.objects.select_related("actor"))
    found = SagaInstance.objects.prefetch_related("steps", actions).filter(pk=saga_id).first()
    if found is None:
        raise SagaNotFound(saga_id)
    return found
