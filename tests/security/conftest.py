"""The rendered overlays and the cluster tools, shared with the cluster tests (same session fixtures)."""

from __future__ import annotations

from tests.cluster.conftest import cluster_settings, crds, kubernetes_validate, rendered

__all__ = ["cluster_settings", "crds", "kubernetes_validate", "rendered"]
