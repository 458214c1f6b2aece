"""Scopes of an API key (a module of its own so that the CLI can name them without importing pydantic)."""

from __future__ import annotations

from enum import StrEnum


class Scope(StrEnum):
    """What a key may do. `admin` includes the other two."""

    PREDICT = "predict"
    FEEDBACK = "feedback"
    ADMIN = "admin"
