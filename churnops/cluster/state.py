"""The rollout state of one environment: `kustomize/overlays/<env>/rollout.yaml` and `artefact-pin.yaml`, kept
in git (GitOps).

`rollout.yaml` patches two resources, and nothing else may carry rollout state:
- the InferenceService predictor's `storageUri` and `canaryTrafficPercent`. The transformer is collocated
  in the predictor's pods (spec.predictor.containers), so one split moves both halves and there is no
  transformer component to patch. KServe reads both fields as traffic configuration; annotations or labels
  would be copied into the Knative revision template and every promote or abort would create new revisions
  instead of shifting traffic;
- the `churn-rollout` ConfigMap: phase, versions and artefact digests, readable in the cluster, and the
  source of the drift detector's reference artefact (the stable version's).

`artefact-pin.yaml` (a JSON patch of the InferenceService) writes the sha256 of the pinned version's
`manifest.json` into both containers, `CHURNOPS_TRANSFORMER_ARTEFACT_SHA256` and
`CHURNOPS_PREDICTOR_ARTEFACT_SHA256`, which refuse to serve an artefact with another digest. It is a JSON
patch because a strategic merge patch of a custom resource replaces lists whole (kustomize knows no merge
key for the InferenceService's `env`), which would drop every other variable. Nothing pinned (a state
written before the pin existed): the patch only tests its target, and no variable is set.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import yaml

Phase = Literal["stable", "canary", "aborted", "staged"]
PHASES: tuple[Phase, ...] = ("stable", "canary", "aborted", "staged")
STATE_FILE = "rollout.yaml"
PIN_FILE = "artefact-pin.yaml"
CONFIGMAP = "churn-rollout"
INFERENCE_SERVICE = "churn"
TRANSFORMER_CONTAINER = "transformer-container"
TRANSFORMER_PIN_ENV = "CHURNOPS_TRANSFORMER_ARTEFACT_SHA256"
PREDICTOR_PIN_ENV = "CHURNOPS_PREDICTOR_ARTEFACT_SHA256"
SHA256 = re.compile(r"^[0-9a-f]{64}$")

HEADER = """\
# Rollout state of the churn InferenceService in this environment: written by `churnops rollout`; do not edit
# by hand. phase: stable (one version, 100 %), canary (model-version gets canary-percent, the rest stays on
# the previously rolled-out revision, which serves stable-version), aborted (model-version failed its canary:
# the spec still pins it, at 0 %, and all traffic is on the rolled-out revision), staged (model-version's
# revision is starting at 0 % before it gets traffic).
"""
PIN_HEADER = """\
# The artefact pin of the version rollout.yaml pins (JSON patch of the InferenceService): the sha256 of its
# manifest.json, which both containers check before they load anything. Written by `churnops rollout`.
"""


class StateError(ValueError):
    """A rollout file that is missing, malformed or contradicts itself."""


@dataclass(frozen=True)
class RolloutState:
    """Where one environment's traffic goes.

    `model_version` is what the InferenceService spec (its latest revision) serves, `stable_version` what
    the previously rolled-out revision serves; `canary_percent` of traffic goes to the former.
    - stable: both equal, 100 %.
    - canary: they differ, 1..99 %.
    - aborted: they differ, 0 %: KServe's documented rollback keeps the spec (no new revision is created)
      and routes everything to the rolled-out revision.
    - staged: 0 % to a spec whose revision is still starting (any version, the stable one included when an
      aborted rollout is settled): Knative sends a `latestRevision` target to the latest READY revision,
      which after an abort is the failed one, so a new spec gets traffic only once its own revision is ready.
    The digests are the sha256 of each version's `manifest.json` (None: a state from before the pin).
    """

    phase: Phase
    model_version: str
    stable_version: str
    storage_uri: str
    stable_storage_uri: str
    canary_percent: int
    artefact_sha256: str | None = None
    stable_artefact_sha256: str | None = None

    def __post_init__(self) -> None:
        if self.phase not in PHASES:
            raise StateError(f"unknown phase {self.phase!r}")
        if not 0 <= self.canary_percent <= 100:
            raise StateError(f"canary percent {self.canary_percent} is not within 0..100")
        for digest in (self.artefact_sha256, self.stable_artefact_sha256):
            if digest is not None and not SHA256.match(digest):
                raise StateError(f"artefact digest {digest!r} is not a lowercase hex sha256")
        same = self.model_version == self.stable_version
        consistent = {
            "stable": same and self.canary_percent == 100,
            "canary": not same and 0 < self.canary_percent < 100,
            "aborted": not same and self.canary_percent == 0,
            "staged": self.canary_percent == 0,
        }[self.phase]
        if not consistent:
            raise StateError(
                f"inconsistent rollout state: phase {self.phase}, model {self.model_version}, "
                f"stable {self.stable_version}, {self.canary_percent} %"
            )

    @classmethod
    def stable(cls, version: str, storage_uri: str, artefact_sha256: str | None = None) -> RolloutState:
        return cls(
            "stable", version, version, storage_uri, storage_uri, 100, artefact_sha256, artefact_sha256
        )

    def with_percent(self, percent: int) -> RolloutState:
        phase: Phase = "canary" if 0 < percent < 100 else self.phase
        return replace(self, phase=phase, canary_percent=percent)


def state_path(overlay_dir: Path) -> Path:
    return overlay_dir / STATE_FILE


def pin_path(overlay_dir: Path) -> Path:
    return overlay_dir / PIN_FILE


def _by_kind(documents: list[Any]) -> dict[str, dict[str, Any]]:
    return {doc["kind"]: doc for doc in documents if isinstance(doc, dict) and "kind" in doc}


def _optional(value: Any) -> str | None:
    return None if value in (None, "") else str(value)


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
            artefact_sha256=_optional(data.get("artefact-sha256")),
            stable_artefact_sha256=_optional(data.get("stable-artefact-sha256")),
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
    _check_pin(overlay_dir, state)
    return state


def _check_pin(overlay_dir: Path, state: RolloutState) -> None:
    """The pin file must set exactly the digest the ConfigMap records (a hand edit of one of them fails)."""
    path = pin_path(overlay_dir)
    if not path.is_file():
        raise StateError(f"{path} does not exist: `churnops rollout` writes it with {STATE_FILE}")
    operations = yaml.safe_load(path.read_text())
    if operations != pin_operations(state.artefact_sha256):
        raise StateError(
            f"{path} does not pin the digest {STATE_FILE} records ({state.artefact_sha256 or 'none'})"
        )


def pin_operations(artefact_sha256: str | None) -> list[dict[str, Any]]:
    """JSON patch: check that container 0 is the transformer, then append the pin to both containers' env.

    The `test` operation makes a reordered container list fail the build instead of pinning MLServer's
    neighbour; `env/-` appends, so no existing variable is touched.
    """
    operations: list[dict[str, Any]] = [
        {"op": "test", "path": "/spec/predictor/containers/0/name", "value": TRANSFORMER_CONTAINER}
    ]
    if artefact_sha256 is None:
        return operations
    return [
        *operations,
        {
            "op": "add",
            "path": "/spec/predictor/containers/0/env/-",
            "value": {"name": TRANSFORMER_PIN_ENV, "value": artefact_sha256},
        },
        {
            "op": "add",
            "path": "/spec/predictor/model/env/-",
            "value": {"name": PREDICTOR_PIN_ENV, "value": artefact_sha256},
        },
    ]


def state_documents(state: RolloutState) -> list[dict[str, Any]]:
    data = {
        "phase": state.phase,
        "model-version": state.model_version,
        "stable-version": state.stable_version,
        "stable-storage-uri": state.stable_storage_uri,
        "canary-percent": str(state.canary_percent),
    }
    if state.artefact_sha256 is not None:
        data["artefact-sha256"] = state.artefact_sha256
    if state.stable_artefact_sha256 is not None:
        data["stable-artefact-sha256"] = state.stable_artefact_sha256
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
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": CONFIGMAP}, "data": data},
    ]


def render_state(state: RolloutState) -> str:
    return HEADER + yaml.safe_dump_all(state_documents(state), sort_keys=False, explicit_start=False)


def render_pin(state: RolloutState) -> str:
    return PIN_HEADER + yaml.safe_dump(pin_operations(state.artefact_sha256), sort_keys=False)


def _replace_file(path: Path, text: str) -> None:
    fd, scratch = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(scratch, 0o644)
        os.replace(scratch, path)
    except BaseException:
        Path(scratch).unlink(missing_ok=True)
        raise


def write_state(overlay_dir: Path, state: RolloutState) -> None:
    """Replace both files, each atomically (a crash leaves each whole). The pin goes first: a crash between
    the two leaves a pin that disagrees with rollout.yaml, which `read_state` refuses, rather than a
    rollout.yaml whose new version carries the old version's digest."""
    _replace_file(pin_path(overlay_dir), render_pin(state))
    _replace_file(state_path(overlay_dir), render_state(state))
