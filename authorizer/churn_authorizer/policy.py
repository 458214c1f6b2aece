"""Which scope a request needs, from its method and path.

Rules are tried in order; the first full match wins and anything no rule names needs `admin` (default deny:
a new endpoint is admin-only until someone maps it here). Open rules name only health and metrics endpoints,
so a path that is read differently here and upstream can at worst reach a health check.

| path (query string ignored)                                   | methods   | needs    |
|---------------------------------------------------------------|-----------|----------|
| `/`, `/healthz`, `/livez`, `/readyz`, `/metrics`              | any       | nothing  |
| `/v2/health/live`, `/v2/health/ready`                         | any       | nothing  |
| `/v2/models/<m>/ready`, `/v2/models/<m>/versions/<v>/ready`   | any       | nothing  |
| `/v1/models/<m>:predict`, `/v1/models/<m>:explain`            | any       | predict  |
| `/v2/models/<m>/infer`, `/v2/models/<m>/versions/<v>/infer`   | any       | predict  |
| `/v1/models`, `/v1/models/<m>`, `/v2`, `/v2/models/<m>`,      | GET, HEAD | predict  |
| `/v2/models/<m>/versions/<v>` (model and server metadata)     |           |          |
| `/feedback`, `/v1/feedback`, `/v2/feedback` (and below)       | any       | feedback |
| anything else (`/v2/repository/...`, `/admin/...`, unknown)   | any       | admin    |
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from typing import Final

from churn_authorizer.scopes import Scope

_SEGMENT = r"[^/]+"
_READ_METHODS: Final = frozenset({"GET", "HEAD"})


@dataclass(frozen=True)
class Rule:
    pattern: re.Pattern[str]
    scope: Scope | None  # None: open, no key needed
    methods: frozenset[str] | None = None  # None: any method


def _rule(pattern: str, scope: Scope | None, methods: frozenset[str] | None = None) -> Rule:
    return Rule(re.compile(pattern), scope, methods)


RULES: Final[tuple[Rule, ...]] = (
    _rule(r"/|/healthz|/livez|/readyz|/metrics", None),
    _rule(r"/v2/health/(?:live|ready)", None),
    _rule(rf"/v2/models/{_SEGMENT}(?:/versions/{_SEGMENT})?/ready", None),
    _rule(r"/v1/models/[^/:]+:(?:predict|explain)", Scope.PREDICT),
    _rule(rf"/v2/models/{_SEGMENT}(?:/versions/{_SEGMENT})?/infer", Scope.PREDICT),
    _rule(
        rf"/v1/models(?:/[^/:]+)?|/v2|/v2/models/{_SEGMENT}(?:/versions/{_SEGMENT})?",
        Scope.PREDICT,
        _READ_METHODS,
    ),
    _rule(r"(?:/v1|/v2)?/feedback(?:/.*)?", Scope.FEEDBACK),
)


def normalize_path(path: str) -> str:
    """Percent-decoded path (as the ASGI server hands it over) with `//`, `.` and `..` resolved.

    Istio's default path normalization does the same before routing, so rules match the path upstream sees.
    """
    merged = re.sub(r"/{2,}", "/", path or "/")
    if not merged.startswith("/"):
        merged = "/" + merged
    return posixpath.normpath(merged)


def required_scope(method: str, path: str) -> Scope | None:
    """The scope `method path` needs; None for open paths."""
    normalized = normalize_path(path)
    verb = method.upper()
    for rule in RULES:
        if rule.pattern.fullmatch(normalized) and (rule.methods is None or verb in rule.methods):
            return rule.scope
    return Scope.ADMIN
