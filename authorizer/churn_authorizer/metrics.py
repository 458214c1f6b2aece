"""Prometheus metrics of the authorizer, on a registry of their own (one per app instance).

One worker process per container, so no multiprocess collector is needed: scale with replicas. The alert
rules on these series are the `churn-authorizer` group of monitoring/prometheus/rules.yaml.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

OUTCOMES: Final = (
    "open",  # health path, no key needed
    "allowed",
    "allowed_unlimited",  # key valid, Redis unavailable, redis_failure_mode=open: the limit was bypassed
    "unauthenticated",  # 401: no key
    "invalid_api_key",  # 401: unknown or revoked key
    "forbidden",  # 403: key lacks the scope
    "unknown_path",  # 403: no rule names the path (deny by default), whatever the key
    "rate_limited",  # 429
    "limiter_unavailable",  # 429: Redis unavailable, redis_failure_mode=closed
    "error",  # 403: unexpected error in the authorizer (fails closed, never a 5xx)
)
SCOPES: Final = ("none", "predict", "feedback", "metrics", "admin")
CIRCUIT_STATES: Final = ("closed", "half_open", "open")


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.decisions = Counter(
            "churnops_authz_decisions",
            "ext_authz decisions by outcome and the scope the path needs",
            ["outcome", "scope"],
            registry=self.registry,
        )
        self.key_decisions = Counter(
            "churnops_authz_key_decisions",
            "Decisions for authenticated requests, by key id (bounded by the keys file)",
            ["key_id", "outcome"],
            registry=self.registry,
        )
        self.redis_errors = Counter(
            "churnops_authz_redis_errors",
            "Rate-limiter calls to Redis that failed or timed out, by exception type",
            ["error"],
            registry=self.registry,
        )
        self.limiter_bypassed = Counter(
            "churnops_authz_limiter_bypassed",
            "Keyed requests decided without a rate-limit check, by why (redis_error, circuit_open)",
            ["reason"],
            registry=self.registry,
        )
        self.circuit_state = Gauge(
            "churnops_authz_redis_circuit_state",
            "1 for the Redis circuit breaker's current state (closed, half_open, open), 0 for the others",
            ["state"],
            registry=self.registry,
        )
        self.circuit_opened = Counter(
            "churnops_authz_redis_circuit_opened",
            "Times the Redis circuit breaker opened",
            registry=self.registry,
        )
        self.latency = Histogram(
            "churnops_authz_check_duration_seconds",
            "Time to decide one ext_authz check",
            ["outcome"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
            registry=self.registry,
        )
        self.keys_loaded = Gauge(
            "churnops_authz_keys_loaded", "API keys in the loaded keys file", registry=self.registry
        )
        self.keys_reloads = Counter(
            "churnops_authz_keys_reloads",
            "Keys file (re)loads by result (reloaded, failed)",
            ["result"],
            registry=self.registry,
        )
        self.keys_failing = Gauge(
            "churnops_authz_keys_file_failing",
            "1 while the keys file on disk does not load (the previous key set, revoked keys included, "
            "stays in force), else 0",
            registry=self.registry,
        )
        # Export every series at 0 from the start, so that rate() and absent() alerts work from boot.
        for outcome in OUTCOMES:
            self.latency.labels(outcome)
            for scope in SCOPES:
                self.decisions.labels(outcome, scope)
        for result in ("reloaded", "failed"):
            self.keys_reloads.labels(result)
        for reason in ("redis_error", "circuit_open"):
            self.limiter_bypassed.labels(reason)
        self.set_circuit_state("closed")

    def set_circuit_state(self, state: str) -> None:
        for known in CIRCUIT_STATES:
            self.circuit_state.labels(known).set(1 if known == state else 0)
