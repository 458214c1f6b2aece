"""Is the InferenceService serving what we applied? Read from what KServe reports for the predictor.

`kubectl wait --for=condition=Ready` is not that gate. KServe copies the Knative Service's
`observedGeneration` into the InferenceService status (kserve/kserve#6081; `PropagateStatus` in
pkg/apis/serving/v1beta1/inference_service_status.go ends with `ss.ObservedGeneration =
serviceStatus.ObservedGeneration`), so a waiter cannot tell a Ready that predates the apply from one that
follows it: the wait returns at once on the stale Ready, or hangs on a generation that never matches.

So the gate reads `status.components.predictor` and the Knative Revision it names, and passes only when:
- `latestCreatedRevision == latestReadyRevision`: the newest revision is the ready one (not needed for a
  0 % target: a rollback must pass even when the canary revision never became ready);
- the `traffic` block routes what was asked: KServe's ksvc reconciler (pkg/controller/v1beta1/
  inferenceservice/reconcilers/knative/ksvc_reconciler.go, `createKnativeService`) writes one target with
  `latestRevision: true` at `canaryTrafficPercent` (tag `latest` with tag routing on) and, under 100 %, one
  target on `latestRolledoutRevision` with the rest (tag `prev`); Knative's status resolves each target to
  a revision name;
- the latest ready Revision runs the spec we applied: its `transformer-container` image and artefact pin,
  its `kserve-container` image, and the `storageUri` among its storage-initializer's arguments (KServe
  injects that init container into the Knative template, `CommonStorageInitialization`). This is what makes
  a stale status fail instead of pass: before KServe reconciles, the latest revision is the old one.
Tested against hand-written statuses shaped like KServe's (tests/cluster/test_kserve.py); no cluster here.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from churnops.cluster.state import (
    PREDICTOR_PIN_ENV,
    TRANSFORMER_CONTAINER,
    TRANSFORMER_PIN_ENV,
    RolloutState,
)

PREDICTOR_CONTAINER = "kserve-container"
STORAGE_INITIALIZER = "storage-initializer"


class ServingNotReadyError(RuntimeError):
    """The InferenceService did not reach the expected split and revision in time; says what was missing."""


@dataclass(frozen=True)
class Expectation:
    """What the predictor must report once a change is live: the split, and the latest revision's spec.

    `storage_uri`, images and pin are None when not known (then not checked). `require_ready` is False for
    a rollback (aborted): only the route matters, the revision it leaves may never have become ready.
    """

    canary_percent: int
    storage_uri: str | None = None
    transformer_image: str | None = None
    predictor_image: str | None = None
    artefact_sha256: str | None = None
    require_ready: bool = True

    @classmethod
    def of_state(cls, state: RolloutState) -> Expectation:
        return cls(
            state.canary_percent,
            state.storage_uri,
            artefact_sha256=state.artefact_sha256,
            require_ready=state.phase != "aborted",
        )

    @classmethod
    def of_rendered(cls, inference_service: Mapping[str, Any], *, require_ready: bool = True) -> Expectation:
        """From the rendered InferenceService that was (or is about to be) applied."""
        predictor = inference_service["spec"]["predictor"]
        model = predictor.get("model", {})
        transformer: Mapping[str, Any] = next(
            (c for c in predictor.get("containers", []) if c.get("name") == TRANSFORMER_CONTAINER), {}
        )
        return cls(
            canary_percent=int(predictor.get("canaryTrafficPercent", 100)),
            storage_uri=model.get("storageUri"),
            transformer_image=transformer.get("image"),
            predictor_image=model.get("image"),
            artefact_sha256=_env(transformer).get(TRANSFORMER_PIN_ENV),
            require_ready=require_ready,
        )

    def describe(self) -> str:
        return f"{self.canary_percent} % to the latest revision" + (
            f" ({self.storage_uri})" if self.storage_uri else ""
        )


def _env(container: Mapping[str, Any]) -> dict[str, str | None]:
    return {item["name"]: item.get("value") for item in container.get("env", []) if "name" in item}


def predictor_status(inference_service: Mapping[str, Any]) -> dict[str, Any]:
    status = inference_service.get("status") or {}
    components = status.get("components") or {}
    predictor: dict[str, Any] = components.get("predictor") or {}
    return predictor


def traffic_problems(predictor: Mapping[str, Any], percent: int) -> list[str]:
    """What in the traffic block differs from `percent` % on the latest revision and the rest on the
    previously rolled-out one (empty: as asked)."""
    traffic: Sequence[Mapping[str, Any]] = predictor.get("traffic") or []
    latest = [t for t in traffic if t.get("latestRevision")]
    latest_percent = sum(int(t.get("percent") or 0) for t in latest)
    problems = []
    if latest_percent != percent:
        problems.append(f"latest revision has {latest_percent} % of traffic, not {percent} %")
    if percent > 0 and not latest:
        problems.append("no traffic target follows the latest revision")
    ready = predictor.get("latestReadyRevision")
    if percent > 0 and any(t.get("revisionName") not in (None, ready) for t in latest):
        problems.append(f"the latest-revision target is not on the latest ready revision {ready}")
    if percent < 100:
        rolled_out = predictor.get("latestRolledoutRevision")
        rest = sum(
            int(t.get("percent") or 0)
            for t in traffic
            if not t.get("latestRevision") and t.get("revisionName") == rolled_out
        )
        if rest != 100 - percent:
            problems.append(
                f"rolled-out revision {rolled_out} has {rest} % of traffic, not {100 - percent} %"
            )
    return problems


def revision_problems(revision: Mapping[str, Any], expected: Expectation) -> list[str]:
    """What in the Knative Revision's pod spec differs from the spec we applied (empty: it is ours)."""
    spec = revision.get("spec") or {}
    name = (revision.get("metadata") or {}).get("name", "?")
    containers = {c.get("name"): c for c in spec.get("containers", [])}
    transformer = containers.get(TRANSFORMER_CONTAINER, {})
    predictor = containers.get(PREDICTOR_CONTAINER, {})
    checks: list[tuple[str, str | None, str | None]] = [
        ("transformer image", expected.transformer_image, transformer.get("image")),
        ("predictor image", expected.predictor_image, predictor.get("image")),
        ("transformer artefact pin", expected.artefact_sha256, _env(transformer).get(TRANSFORMER_PIN_ENV)),
        ("predictor artefact pin", expected.artefact_sha256, _env(predictor).get(PREDICTOR_PIN_ENV)),
    ]
    problems = [
        f"revision {name}: {what} is {actual!r}, not {wanted!r}"
        for what, wanted, actual in checks
        if wanted is not None and actual != wanted
    ]
    initializers = [c for c in spec.get("initContainers", []) if c.get("name") == STORAGE_INITIALIZER]
    uri = expected.storage_uri
    if uri is not None and initializers and not any(uri in (c.get("args") or []) for c in initializers):
        problems.append(f"revision {name} does not download {expected.storage_uri}")
    return problems


def serving_problems(
    inference_service: Mapping[str, Any],
    expected: Expectation,
    revision: Callable[[str], Mapping[str, Any] | None],
) -> list[str]:
    """Everything that keeps the InferenceService from serving `expected` (empty: it serves it)."""
    predictor = predictor_status(inference_service)
    if not predictor:
        return ["no status.components.predictor yet"]
    created, ready = predictor.get("latestCreatedRevision"), predictor.get("latestReadyRevision")
    problems = traffic_problems(predictor, expected.canary_percent)
    if not expected.require_ready:
        return problems  # a rollback: the canary revision may never have become ready, and need not
    if not ready:
        return [*problems, "no ready revision"]
    if created != ready:
        problems.append(f"latest created revision {created} is not ready (latest ready: {ready})")
    found = revision(ready)
    if found is None:
        problems.append(f"revision {ready} not found")
    else:
        problems.extend(revision_problems(found, expected))
    return problems


class KServeStatus:
    """Reads the InferenceService and its revisions with kubectl, and waits for an expectation."""

    def __init__(self, kubectl: Sequence[str], namespace: str, name: str = "churn") -> None:
        self.kubectl = list(kubectl)
        self.namespace = namespace
        self.name = name

    def _get(self, kind: str, name: str) -> dict[str, Any] | None:
        result = subprocess.run(
            [*self.kubectl, "--namespace", self.namespace, "get", kind, name, "--output", "json"],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            return None
        document: dict[str, Any] = json.loads(result.stdout)
        return document

    def inference_service(self) -> dict[str, Any] | None:
        return self._get("inferenceservice", self.name)

    def revision(self, name: str) -> dict[str, Any] | None:
        return self._get("revisions.serving.knative.dev", name)

    def problems(self, expected: Expectation) -> list[str]:
        found = self.inference_service()
        if found is None:
            return [f"inferenceservice/{self.name} not readable in namespace {self.namespace}"]
        return serving_problems(found, expected, self.revision)

    def wait(
        self,
        expected: Expectation,
        timeout_s: float,
        interval_s: float = 2.0,
        on_wait: Callable[[list[str]], None] | None = None,
    ) -> float:
        """Poll until the InferenceService serves `expected`; returns the seconds it took."""
        started = time.monotonic()
        problems = self.problems(expected)
        while problems:
            if time.monotonic() - started > timeout_s:
                raise ServingNotReadyError(
                    f"inferenceservice/{self.name} does not serve {expected.describe()} after "
                    f"{timeout_s:g} s: " + "; ".join(problems)
                )
            if on_wait is not None:
                on_wait(problems)
            time.sleep(interval_s)
            problems = self.problems(expected)
        return time.monotonic() - started
