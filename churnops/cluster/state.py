"""The rollout state of one environment: `kustomize/overlays/<env>/rollout.yaml`, kept in git (GitOps).

The file patches two resources, and nothing else may carry rollout state:
- the InferenceService predictor's `storageUri` and `canaryTrafficPercent`. The transformer is collocated
  in the predictor's pods (spec.predictor.containers), so one split moves both halves and there is no
  transformer component to patch. KServe reads both fields as traffic configuration; annotations or labels
  would be copied into the Knative revision template and every promote or abort would create new revisions
  instead of shifting traffic;
- the `churn-rollout` ConfigMap: phase and versions, readable in the cluster, and the source of the drift
  detector's reference artefact (the stable version's).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import yaml

Phase = Literal["stable", "canary", "aborted"]
PHASES: tuple[Phase, ...] = ("stable", "canary", "aborted")
STATE_FILE = "rollout.yaml"
CONFIGMAP = "churn-rollout"
INFERENCE_SERVICE = "churn"

HEADER = """\
# Rollout state of the churn InferenceService in this environment: written by `churnops rollout`; do not edit
# by hand. phase: stable (one version, 100 %), canary (model-version gets canary-percent, the rest stays on
# the previous rolled-out revision, which serves stable-version), aborted (all traffic pinned back to it).
"""


class StateError(ValueError):
    """A rollout file that is missing, malformed or contradicts itself."""


@dataclass(frozen=True)
class RolloutState:
    """Where one environment's traffic goes.

    `model_version` is what the InferenceService spec (its latest revision) serves, `stable_version` what
    the previously rolled-out revision serves; `canary_percent` of traffic goes to the former. Stable:
    both equal, 100 %. Canary: they differ. Aborted: the spec is back on the stable version, 0 % to the
    latest revision, so all traffic stays on the revision that served before the canary.
    """

    phase: Phase
    model_version: str
    stable_version: str
    storage_uri: str
    stable_storage_uri: str
    canary_percent: int

    def __post_init__(self) -> None:
        if self.phase not in PHASES:
            raise StateError(f"unknown phase {self.phase!r}")
        if not 0 <= self.canary_percent <= 100:
            raise StateError(f"canary percent {self.canary_percent} is not within 0..100")
        consistent = {
            "stable": self.model_version == self.stable_version and self.canary_percent == 100,
            "canary": self.model_version != self.stable_version and 0 < self.canary_percent < 100,
            "aborted": self.model_version == self.stable_version and self.canary_percent == 0,
        }[self.phase]
        if not consistent:
            raise StateError(
                f"inconsistent rollout state: phase {self.phase}, model {self.model_version}, "
                f"stable {self.stable_version}, {self.canary_percent} %"
            )

    @classmethod
    def stable(cls, version: str, storage_uri: str) -> RolloutState:
        return cls("stable", version, version, storage_uri, storage_uri, 100)

    def with_percent(self, percent: int) -> RolloutState:
        return replace(self, canary_percent=percent)


def state_path(overlay_dir: Path) -> Path:
    return overlay_dir / STATE_FILE


def _by_kind(documents: list[Any]) -> dict[str, dict[str, Any]]:
    return {doc["kind"]: doc for doc in documents if isinstance(doc, dict) and "kind" in doc}


def read_state(overlay_dir: Path) -> RolloutState:
    path = state_path(overlay_dir)
    if not path.is_file():
        raise StateError(f"{path} does not exist (not a ChurnOps overlay?)")
    documents = _by_kind(list(yaml.safe_load_all(path.read_text())))
    try:
        spec = documents["InferenceService"]["spec"]
        data = documents["ConfigMap"]["data"]
        predictor_percent = int(spec["predictor"]["canaryTrafficPercent"])
        state = RolloutState(
            phase=data["phase"],
            model_version=str(data["model-version"]),
            stable_version=str(data["stable-version"]),
            storage_uri=str(spec["predictor"]["model"]["storageUri"]),
            stable_storage_uri=str(data["stable-storage-uri"]),
            canary_percent=int(data["canary-percent"]),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise StateError(f"{path}: malformed rollout state ({error})") from error
    if set(spec) != {"predictor"}:
        # A leftover `transformer:` (the layout before collocation) would make kustomize add a transformer
        # component without containers to the InferenceService.
        raise StateError(
            f"{path}: the rollout state patches spec.predictor only (the transformer is collocated in the "
            f"predictor's pods), not {', '.join(sorted(set(spec) - {'predictor'}))}"
        )
    if predictor_percent != state.canary_percent:
        raise StateError(f"{path}: the predictor's canaryTrafficPercent disagrees with canary-percent")
    return state


def state_documents(state: RolloutState) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "serving.kserve.io/v1beta1",
            "kind": "InferenceService",
            "metadata": {"name": INFERENCE_SERVICE},
            "spec": {
                "predictor": {
                    "canaryTrafficPercent": state.canary_percent,
                    "model": {"storageUri": state.storage_uri},
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": CONFIGMAP},
            "data": {
                "phase": state.phase,
                "model-version": state.model_version,
                "stable-version": state.stable_version,
                "stable-storage-uri": state.stable_storage_uri,
                "canary-percent": str(state.canary_percent),
            },
        },
    ]


def render_state(state: RolloutState) -> str:
    return HEADER + yaml.safe_dump_all(state_documents(state), sort_keys=False, explicit_start=False)


def write_state(overlay_dir: Path, state: RolloutState) -> None:
    """Replace the rollout file atomically: a crash leaves the previous state whole."""
    path = state_path(overlay_dir)
    fd, scratch = tempfile.mkstemp(prefix=f".{path.name}.", dir=overlay_dir)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(render_state(state))
        os.chmod(scratch, 0o644)
        os.replace(scratch, path)
    except BaseException:
        Path(scratch).unlink(missing_ok=True)
        raise
