"""The sagas' handlers: each saga's start, and its steps (registered with the saga)."""

from __future__ import annotations

from apps.sagas import completion

__all__ = ["completion"]
