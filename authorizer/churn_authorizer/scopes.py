"""Scopes of an API key (a module of its own so that the CLI can name them without importing pydantic)."""

from __future__ import annotations

from enum import StrEnum


class Scope(StrEnum):
    """What a key may do. `admin` includes the others.

    `metrics` is the scrape key's: Prometheus reads `/metrics` of the mesh workloads with it (the business
    counters are not for every caller that reaches a pod), and it opens nothing else.
    """

    PREDICT = "predict"
    FEEDBACK = "feedback"
    METRICS = "metrics"
    ADMIN = "admin"
