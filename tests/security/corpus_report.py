"""Figures for docs/_incoming/security.md: how the tricky-path corpus fares against a policy file.

    .venv/bin/python -m tests.security.corpus_report                         # the policies of this checkout
    .venv/bin/python -m tests.security.corpus_report OLD_POLICY.yaml BASE    # another file, another mode

Counts (path, method, port) requests to the churn pods that skip the authorizer, and among those the ones
the server behind would route to a protected endpoint. The overlay is rendered with kubectl kustomize.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import yaml

from churnops.cluster.render import render
from churnops.cluster.settings import ClusterSettings
from churnops.cluster.validate import parse_documents
from tests.security.istio import Normalization, Request, evaluate, upstream_route
from tests.security.test_mesh_policy import (
    CHURN_HEALTH,
    CHURN_PORTS,
    CORPUS,
    PROTECTED_ROUTES,
    churn_labels,
    forwarded,
)
from tests.support.services import REPO


def main(argv: list[str]) -> None:
    documents = parse_documents(render(ClusterSettings(project_dir=REPO), "prod"))
    policies = [d for d in documents if d["kind"] == "AuthorizationPolicy"]
    if len(argv) > 1:
        policies = [d for d in yaml.safe_load_all(Path(argv[1]).read_text()) if d]
    mode: Normalization = argv[2] if len(argv) > 2 else "DECODE_AND_MERGE_SLASHES"  # type: ignore[assignment]
    labels = churn_labels(documents)
    total = skipped = protected = rejected = 0
    for raw, method, port in itertools.product(CORPUS, ("GET", "POST"), CHURN_PORTS):
        total += 1
        path = forwarded(raw, mode)
        if path is None:
            rejected += 1
            continue
        if not evaluate(policies, labels, Request(method, path, port)).reaches_authorizer:
            skipped += 1
            route = upstream_route(path)
            protected += route not in CHURN_HEALTH and bool(PROTECTED_ROUTES.fullmatch(route))
    print(
        f"normalization {mode}: {len(CORPUS)} paths x 2 methods x {len(CHURN_PORTS)} ports = {total} requests"
    )
    print(f"  refused by the proxy (400): {rejected}")
    print(f"  skip the authorizer: {skipped}, of which reach a protected route: {protected}")


if __name__ == "__main__":
    main(sys.argv)
