"""Which scope a request needs, from its method and path: deny by default.

The mesh sends every request to the churn pods and to the detector here except a short list of health
paths (manifests/istio); this table is the second line. Rules are tried in order; the first full match
wins. A path no rule names is refused (403 `unknown_path`) whatever the key, `admin` included: a new
endpoint stays closed until someone maps it here, and a path that the mesh and the server read differently
can at worst reach a health check, the only thing open without a key.

| path (query string ignored)                                   | methods   | needs    |
|---------------------------------------------------------------|-----------|----------|
| `/healthz`, `/livez`, `/readyz`                               | GET, HEAD | nothing  |
| `/v2/health/live`, `/v2/health/ready`                         | GET, HEAD | nothing  |
| `/v2/models/<m>/ready`, `/v2/models/<m>/versions/<v>/ready`   | GET, HEAD | nothing  |
| `/metrics`                                                    | GET, HEAD | metrics  |
| `/v1/models/<m>:predict`                                      | POST      | predict  |
| `/v2/models/<m>/infer`, `/v2/models/<m>/versions/<v>/infer`   | POST      | predict  |
| `/v1/models`, `/v1/models/<m>`, `/v2`, `/v2/models/<m>`,      | GET, HEAD | predict  |
| `/v2/models/<m>/versions/<v>` (model and server metadata)     |           |          |
| `/feedback` (the detector's labels)                           | POST      | feedback |
| `/performance`, `/reports/drift`, `/reports/drift/<id>` (detector) | GET, HEAD | admin |
| `/v2/repository/index`, `/v2/repository/models/<m>/load`,     | POST      | admin    |
| `/v2/repository/models/<m>/unload`                            |           |          |
| anything else (gRPC `/inference.GRPCInferenceService/...`, `/docs`, `/events`, `:explain`, other methods) | any | refused |

`:explain` is refused: no explainer is deployed, and KServe's transformer answers it with a 501 naming its
missing `explainer_host` (found by the attack suite, tests/security/attacks.py).

`/events` (the detector's payload log) is not here on purpose: only the churn pods' mesh identity may post
it (an Istio ALLOW policy on the detector), no API key opens it.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from typing import Final
from urllib.parse import unquote

from churn_authorizer.scopes import Scope

_SEGMENT = r"[^/]+"
_READ: Final = frozenset({"GET", "HEAD"})
_WRITE: Final = frozenset({"POST"})


class Open:
    """Marker of a rule that needs no key (health paths only)."""


OPEN: Final = Open()


@dataclass(frozen=True)
class Rule:
    pattern: re.Pattern[str]
    needs: Scope | Open
    methods: frozenset[str]


def _rule(pattern: str, needs: Scope | Open, methods: frozenset[str]) -> Rule:
    return Rule(re.compile(pattern), needs, methods)


_VERSION = rf"(?:/versions/{_SEGMENT})?"
RULES: Final[tuple[Rule, ...]] = (
    _rule(r"/healthz|/livez|/readyz|/v2/health/(?:live|ready)", OPEN, _READ),
    _rule(rf"/v2/models/{_SEGMENT}{_VERSION}/ready", OPEN, _READ),
    _rule(r"/metrics", Scope.METRICS, _READ),
    _rule(r"/v1/models/[^/:]+:predict", Scope.PREDICT, _WRITE),
    _rule(rf"/v2/models/{_SEGMENT}{_VERSION}/infer", Scope.PREDICT, _WRITE),
    _rule(rf"/v1/models(?:/[^/:]+)?|/v2|/v2/models/{_SEGMENT}{_VERSION}", Scope.PREDICT, _READ),
    _rule(r"/feedback", Scope.FEEDBACK, _WRITE),
    _rule(rf"/performance|/reports/drift(?:/{_SEGMENT})?", Scope.ADMIN, _READ),
    _rule(rf"/v2/repository/index|/v2/repository/models/{_SEGMENT}/(?:load|unload)", Scope.ADMIN, _WRITE),
)


def normalize_path(path: str) -> str:
    """The path as the server behind the mesh routes it, from the RAW path Envoy sent: percent-decoded once
    (as uvicorn decodes the path it routes on), `\\` as `/` (Istio's BASE normalization), `//` merged, `.`
    and `..` resolved, nothing above the root. Invalid UTF-8 becomes U+FFFD, which no rule matches.

    The mesh already normalizes with DECODE_AND_MERGE_SLASHES (manifests/istio); doing it again here makes
    the rules independent of that setting. Decoding the raw path exactly once matters: a second decode
    would read `%252F` as `/` where the server behind reads `%2F`, a name it routes nowhere.
    """
    decoded = unquote(path or "/", errors="replace").replace("\\", "/")
    merged = re.sub(r"/{2,}", "/", decoded)
    if not merged.startswith("/"):
        merged = "/" + merged
    return posixpath.normpath(merged)


def required_scope(method: str, path: str) -> Scope | Open | None:
    """What `method path` needs: a scope, OPEN, or None when no rule allows it at all (refused)."""
    if "\x00" in path:
        return None
    normalized = normalize_path(path)
    verb = method.upper()
    for rule in RULES:
        if verb in rule.methods and rule.pattern.fullmatch(normalized):
            return rule.needs
    return None
