"""Istio's authorization, modelled from its documented semantics, to evaluate our RENDERED policies offline.

No mesh runs here, so this module does what a sidecar does with a request, in the order Istio documents:
1. Path normalization (meshConfig.pathNormalization; istio/api mesh/v1alpha1/config.proto,
   ProxyPathNormalization, and https://istio.io/latest/docs/reference/config/security/normalization/):
   - NONE: the path as sent.
   - BASE (Envoy `normalize_path`): percent-encoded UNRESERVED characters decoded (%2d `-`, %2e `.`,
     %30-%39, %41-%5a, %5f `_`, %61-%7a, %7e `~`, hex case-insensitive, once), `\\` becomes `/`, dot
     segments resolved as RFC 3986 5.2.4; `%00` is refused with 400.
   - MERGE_SLASHES: BASE, then `//`+ merged.
   - DECODE_AND_MERGE_SLASHES: `%2F`/`%5C` (any case) decoded first, then BASE, then slashes merged. (Envoy,
     ConnectionManagerUtility::maybeNormalizePath: escaped slashes are unescaped before the path is
     canonicalized, slashes merged after it.)
   The normalized path is what policies match AND what the server behind receives.
2. Matching (istio/api security/v1beta1/authorization_policy.proto, `Rule`, `Operation`, `Source`; istio
   pilot/pkg/security/authz/matcher/string.go StringMatcherWithPrefix, header.go PathMatcher): every string
   field supports exact `abc`, prefix `abc*`, suffix `*abc` and presence `*` (non-empty); a leading `*` is
   tested before a trailing one; paths are matched case-sensitively on the path WITHOUT the query string;
   hosts case-insensitively. A rule matches when one of its sources, one of its operations and all its
   conditions match; an empty rule always matches; fields of an operation/source are ANDed, values of one
   field ORed, `notX` fields must match none. Path templates (`{*}`, `{**}`) and `when` conditions are not
   modelled: a policy using them is refused here rather than evaluated wrongly.
3. Actions (same proto, header): CUSTOM first (a matching CUSTOM policy asks the provider), then DENY
   (any match denies), then ALLOW (no ALLOW policy: allow; a matching one: allow; else deny).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import unquote

Normalization = Literal["NONE", "BASE", "MERGE_SLASHES", "DECODE_AND_MERGE_SLASHES"]
NORMALIZATIONS: tuple[Normalization, ...] = ("NONE", "BASE", "MERGE_SLASHES", "DECODE_AND_MERGE_SLASHES")
# Istio's normalization table: the characters BASE decodes (unreserved in RFC 3986).
_UNRESERVED = re.compile(r"%(2[dDeE]|3[0-9]|4[1-9a-fA-F]|5[0-9aA]|5[fF]|6[1-9a-fA-F]|7[0-9aA]|7[eE])")
_ESCAPED_SLASH = re.compile(r"%(2[fF]|5[cC])")


class RejectedError(ValueError):
    """A request the proxy refuses before any policy (400), e.g. `%00` in the path."""


class UnsupportedPolicyError(ValueError):
    """A policy feature this model does not evaluate (path templates, `when` conditions)."""


def remove_dot_segments(path: str) -> str:
    """RFC 3986 section 5.2.4, literally (not posixpath.normpath, which also merges slashes)."""
    output: list[str] = []
    rest = path
    while rest:
        if rest.startswith("../"):
            rest = rest[3:]
        elif rest.startswith("./") or rest.startswith("/./"):
            rest = rest[2:]
        elif rest == "/.":
            rest = "/"
        elif rest.startswith("/../"):
            rest = rest[3:]
            if output:
                output.pop()
        elif rest == "/..":
            rest = "/"
            if output:
                output.pop()
        elif rest in {".", ".."}:
            rest = ""
        else:
            start = 1 if rest.startswith("/") else 0
            end = rest.find("/", start)
            end = len(rest) if end == -1 else end
            output.append(rest[:end])
            rest = rest[end:]
    return "".join(output)


def normalize(path: str, mode: Normalization) -> str:
    """The path a sidecar matches and forwards under `mode`, query string kept apart."""
    path, _, query = path.partition("?")
    if "%00" in path:
        raise RejectedError("%00 in the path")
    if mode == "NONE":
        return path + ("?" + query if query else "")
    if mode == "DECODE_AND_MERGE_SLASHES":
        path = _ESCAPED_SLASH.sub(lambda m: "/" if m.group(1).lower() == "2f" else "\\", path)
    path = _UNRESERVED.sub(lambda m: chr(int(m.group(1), 16)), path)
    path = remove_dot_segments(path.replace("\\", "/"))
    if mode in {"MERGE_SLASHES", "DECODE_AND_MERGE_SLASHES"}:
        path = re.sub(r"/{2,}", "/", path)
    return path + ("?" + query if query else "")


def url_path(path: str) -> str:
    """What policies match: the path without the query string (Envoy's PathMatcher)."""
    return path.partition("?")[0]


def upstream_route(normalized: str) -> str:
    """The path the server behind routes on: the forwarded path, percent-decoded once (uvicorn/Starlette)."""
    return unquote(url_path(normalized))


def string_match(pattern: str, value: str, *, ignore_case: bool = False) -> bool:
    if ignore_case:
        pattern, value = pattern.lower(), value.lower()
    if pattern == "*":
        return value != ""
    if pattern.startswith("*"):
        return value.endswith(pattern[1:])
    if pattern.endswith("*"):
        return value.startswith(pattern[:-1])
    return value == pattern


def _any(patterns: Sequence[str] | None, value: str | None, *, ignore_case: bool = False) -> bool:
    return value is not None and any(string_match(p, value, ignore_case=ignore_case) for p in patterns or ())


def _field_ok(spec: Mapping[str, Any], name: str, value: str | None, *, ignore_case: bool = False) -> bool:
    """`name` (one must match, if given) and `notName` (none may match)."""
    positive = spec.get(name)
    negative = spec.get("not" + name[0].upper() + name[1:])
    if positive is not None and not _any(positive, value, ignore_case=ignore_case):
        return False
    return not (negative and _any(negative, value, ignore_case=ignore_case))


@dataclass(frozen=True)
class Request:
    """One request as the sidecar of the destination sees it (path already normalized)."""

    method: str
    path: str
    port: int
    host: str = "churn.churnops.svc.cluster.local"
    principal: str | None = None  # the peer's mTLS identity; None for plaintext

    @property
    def namespace(self) -> str | None:
        match = re.search(r"/ns/([^/]+)/", self.principal or "")
        return match.group(1) if match else None


def operation_matches(operation: Mapping[str, Any], request: Request) -> bool:
    for template_field in ("paths", "notPaths"):
        if any("{" in p for p in operation.get(template_field, ())):
            raise UnsupportedPolicyError("path templates are not modelled")
    return (
        _field_ok(operation, "hosts", request.host, ignore_case=True)
        and _field_ok(operation, "ports", str(request.port))
        and _field_ok(operation, "methods", request.method)
        and _field_ok(operation, "paths", url_path(request.path))
    )


def source_matches(source: Mapping[str, Any], request: Request) -> bool:
    known = {"principals", "notPrincipals", "namespaces", "notNamespaces"}
    if set(source) - known:
        raise UnsupportedPolicyError(f"source fields {sorted(set(source) - known)} are not modelled")
    return _field_ok(source, "principals", request.principal) and _field_ok(
        source, "namespaces", request.namespace
    )


def rule_matches(rule: Mapping[str, Any], request: Request) -> bool:
    if rule.get("when"):
        raise UnsupportedPolicyError("`when` conditions are not modelled")
    sources = rule.get("from") or []
    operations = rule.get("to") or []
    from_ok = not sources or any(source_matches(s.get("source", {}), request) for s in sources)
    to_ok = not operations or any(operation_matches(o.get("operation", {}), request) for o in operations)
    return from_ok and to_ok


def policy_matches(policy: Mapping[str, Any], request: Request) -> bool:
    """A policy without rules never matches (proto: `rules` "If not set, the match will never occur")."""
    return any(rule_matches(rule, request) for rule in policy.get("spec", {}).get("rules") or [])


def applies_to(policy: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    selector = (policy.get("spec", {}).get("selector") or {}).get("matchLabels") or {}
    return all(labels.get(key) == value for key, value in selector.items())


@dataclass
class Verdict:
    checked_by: list[str] = field(default_factory=list)  # providers of the CUSTOM policies that matched
    denied_by_mesh: bool = False

    @property
    def reaches_authorizer(self) -> bool:
        return bool(self.checked_by)


def evaluate(policies: Iterable[Mapping[str, Any]], labels: Mapping[str, str], request: Request) -> Verdict:
    applicable = [p for p in policies if applies_to(p, labels)]
    by_action: dict[str, list[Mapping[str, Any]]] = {"CUSTOM": [], "DENY": [], "ALLOW": [], "AUDIT": []}
    for policy in applicable:
        by_action[policy["spec"].get("action", "ALLOW")].append(policy)
    verdict = Verdict(
        checked_by=[p["spec"]["provider"]["name"] for p in by_action["CUSTOM"] if policy_matches(p, request)]
    )
    if any(policy_matches(p, request) for p in by_action["DENY"]) or (
        by_action["ALLOW"] and not any(policy_matches(p, request) for p in by_action["ALLOW"])
    ):
        verdict.denied_by_mesh = True
    return verdict
