"""Personas and API clients shared by every API test.

Alice and Bob are ordinary users. Bob must never see, change or even learn of the
existence of Alice's things: every attempt is a 404.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from apps.accounts.services import issue_token
from tests.support.worker import WorkerProcess, resume_session_worker, settle


class Api:
    """An API client signed in as one user, with a few conveniences."""

    def __init__(self, username: str) -> None:
        self.user = get_user_model().objects.create_user(
            username, f"{username}@example.test", f"pw-{username}-1"
        )
        self.token = issue_token(user=self.user).key  # the raw key; the database has its hash
        self.client = APIClient()
        self.client.credentials(HTTP_AUTHORIZATION=f"Token {self.token}")

    def get(self, path: str, **params: Any) -> Any:
        return self.client.get(f"/api/v1/{path}", params)

    def post(self, path: str, body: Any = None, **headers: str) -> Any:
        return self.client.post(f"/api/v1/{path}", body, format="json", headers=headers)

    def patch(self, path: str, body: Any, **headers: str) -> Any:
        return self.client.patch(f"/api/v1/{path}", body, format="json", headers=headers)

    def delete(self, path: str, **headers: str) -> Any:
        return self.client.delete(f"/api/v1/{path}", headers=headers)

    def create(self, **fields: Any) -> dict[str, Any]:
        response = self.post("todos/", {"title": "Buy milk", **fields})
        assert response.status_code == 201, response.json()
        return response.json()


@pytest.fixture
def alice() -> Api:
    return Api("alice")


@pytest.fixture
def bob() -> Api:
    return Api("bob")


@pytest.fixture
def worker(celery_worker: WorkerProcess) -> Iterator[WorkerProcess]:
    """The session's worker, settled after the test so nothing leaks into the next one."""
    resume_session_worker()
    yield celery_worker
    settle()
