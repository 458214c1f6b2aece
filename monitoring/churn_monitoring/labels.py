"""Prometheus label values from what callers send, limited to closed sets.

Every distinct label value is a time series that lives until the process ends: a caller that sends a new
`model_version` or `risk_level` with every event would grow the detector's memory and Prometheus' index
without bound. Versions the detector knows (its artefact's, plus CHURNOPS_DETECTOR_KNOWN_VERSIONS, e.g.
the canary's) keep their own label; everything else is counted as `unknown`. The rows themselves are
stored with the version they carry (cut to the column's 64 characters), so nothing is lost for audit
and the store can still be queried by any version.
"""

from __future__ import annotations

from collections.abc import Iterable

UNKNOWN = "unknown"


class LabelValues:
    def __init__(self, versions: Iterable[str], risk_levels: Iterable[str]) -> None:
        self.versions = frozenset(versions)
        self.risk_levels = frozenset(risk_levels)

    def version(self, value: str | None) -> str:
        return value if value in self.versions else UNKNOWN

    def risk_level(self, value: str | None) -> str:
        return value if value in self.risk_levels else UNKNOWN

    def known(self, version: str) -> bool:
        return version in self.versions
