"""What one inference request did, collected along the way for its log line, metrics and events.

The ASGI middleware creates the record and the model fills it in; both run in the request's task, so a
context variable carries it without threading it through KServe's handler signatures.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RequestRecord:
    request_id: str
    protocol: str | None = None
    batch_size: int = 0
    model_version: str | None = None
    reason: str | None = None
    error: str | None = None
    customers: list[dict[str, Any]] = field(default_factory=list)


CURRENT: ContextVar[RequestRecord | None] = ContextVar("churn_request", default=None)


def current() -> RequestRecord | None:
    return CURRENT.get()
