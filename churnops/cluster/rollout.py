"""Canary rollouts of model versions by KServe traffic split, with the registry aliases following along.

KServe's canary (website: "Canary Rollout Strategy"; ksvc_reconciler.go, `createKnativeService`): the spec
pins one storageUri; `canaryTrafficPercent` of traffic goes to the latest ready revision and the rest to
`latestRolledoutRevision`, the last one that had 100 %.
- start (`churnops rollout VERSION --canary N`): the spec pins VERSION's artefact (and its digest, the
  artefact pin); KServe creates a new revision and gives it N %. Registry: `challenger` = VERSION.
  Repeating it with another N moves the split of the same canary (no new revision).
- promote: 100 % to the new revision, which becomes the rolled-out one. Registry: VERSION becomes
  `champion` (Registry.promote, which records the history and clears `challenger`).
- abort: KServe's documented rollback, `canaryTrafficPercent: 0` with the spec KEPT: all traffic returns
  to the rolled-out revision, which never stopped running. A route change, no new revision (reverting the
  storageUri too would create a third revision, two more pods at min-scale 2, and make the rollback wait
  for it). Registry: `challenger` is cleared if it named VERSION; `champion` never changed.
- after an abort the spec still pins the failed version at 0 %. Knative sends a `latestRevision` target to
  the latest READY revision, and until a new spec's revision is ready that is the failed one: so a new
  version (`rollout OTHER`), or the stable one again (`rollout settle`, to retire the failed revision), is
  first STAGED at 0 % until its revision is ready, and only then given traffic. With --apply both happen in
  one command; without, run it again once the staged change is applied.

The transformer is collocated with the predictor (spec.predictor.containers, `transformer-container`), so
a revision holds one model version of both halves and the predictor's split moves them together.

The state lives in the overlay's rollout.yaml and artefact-pin.yaml (git, GitOps): every command edits
them, `--apply` also applies them with kubectl and waits until KServe reports the split on the revision
that runs this spec (churnops.cluster.kserve), `--dry-run` only prints the rendered diff.
"""

from __future__ import annotations

import difflib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from churnops.cluster.images import IMAGES, ImageRef
from churnops.cluster.kserve import (
    Expectation,
    KServeStatus,
    ServingNotReadyError,
    predictor_status,
    traffic_problems,
)
from churnops.cluster.render import deployable, kustomize, overlay_dir, render
from churnops.cluster.settings import ClusterSettings
from churnops.cluster.state import RolloutState, read_state, write_state

if TYPE_CHECKING:
    from churn_model.registry import Registry

Action = Literal["start", "promote", "abort", "settle", "pin"]
# kubectl jsonpath, one per line: the collocated transformer's image, the predictor's, and the transformer's
# of the layout before collocation (spec.transformer; empty once migrated).
LIVE_IMAGES = (
    '{.spec.predictor.containers[?(@.name=="transformer-container")].image}{"\\n"}'
    '{.spec.predictor.model.image}{"\\n"}'
    "{.spec.transformer.containers[0].image}"
)


class RolloutError(RuntimeError):
    """A rollout step that does not apply to the current state (or a version the registry lacks)."""


class NotReadyError(RolloutError):
    """Applied, but KServe did not report the expected split on the expected revision in time."""


@dataclass(frozen=True)
class Plan:
    """One rollout command: the state before, the states to apply in order (the last is `after`)."""

    action: Action
    overlay: str
    before: RolloutState
    steps: tuple[RolloutState, ...]

    @property
    def after(self) -> RolloutState:
        return self.steps[-1]

    @property
    def version(self) -> str:
        return self.before.model_version if self.action in ("abort", "settle") else self.after.model_version

    def describe(self) -> str:
        after = self.after
        staged = " (staged at 0 % first, until its revision is ready)" if len(self.steps) > 1 else ""
        if self.action == "start":
            return (
                f"{self.overlay}: canary of version {after.model_version} at {after.canary_percent} % "
                f"({100 - after.canary_percent} % stays on version {after.stable_version}){staged}"
            )
        if self.action == "promote":
            return f"{self.overlay}: version {after.model_version} promoted to 100 % and champion"
        if self.action == "pin":
            return f"{self.overlay}: version {after.model_version} pinned to artefact {after.artefact_sha256}"
        if self.action == "settle":
            return (
                f"{self.overlay}: the aborted version {self.before.model_version} retired, the spec back on "
                f"version {after.model_version} at 100 %{staged}"
            )
        return (
            f"{self.overlay}: canary of version {self.before.model_version} aborted (spec kept, 0 %), all "
            f"traffic back on version {after.stable_version}"
        )


@dataclass
class Execution:
    """What executing a plan took: seconds per applied step (apply, then until KServe reported it)."""

    applied: list[tuple[RolloutState, float, float]] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return sum(apply_s + ready_s for _, apply_s, ready_s in self.applied)


# --- transitions (pure) --------------------------------------------------------------------------------


def start_states(
    state: RolloutState, version: str, percent: int, storage_uri: str, artefact_sha256: str | None
) -> tuple[RolloutState, ...]:
    if not 0 < percent < 100:
        raise RolloutError(f"--canary must be between 1 and 99, not {percent}")
    if state.phase == "canary" and state.model_version != version:
        raise RolloutError(
            f"version {state.model_version} is already in canary: promote or abort it before "
            f"rolling out version {version}"
        )
    if state.phase != "stable" and state.model_version == version:
        return (state.with_percent(percent),)  # the same spec: only the split moves
    if version == state.stable_version:
        hint = " (`churnops rollout settle` puts the spec back on it)" if state.phase != "stable" else ""
        raise RolloutError(f"version {version} already serves all traffic{hint}")
    canary = RolloutState(
        "canary",
        version,
        state.stable_version,
        storage_uri,
        state.stable_storage_uri,
        percent,
        artefact_sha256,
        state.stable_artefact_sha256,
    )
    if state.phase == "stable":
        return (canary,)
    return (replace(canary, phase="staged", canary_percent=0), canary)


def pin_state(state: RolloutState, artefact_sha256: str) -> RolloutState:
    """The stable version pinned to its artefact's digest: for an environment whose state predates the pin
    (the predictor refuses to start without one). Changes the containers' environment, so KServe makes a
    new revision of the same model version at 100 %: no canary, as nothing about the model changes."""
    if state.phase != "stable":
        raise RolloutError(
            f"pin a stable environment only (phase {state.phase}): promote, abort or settle first"
        )
    if state.artefact_sha256 == artefact_sha256:
        raise RolloutError(f"version {state.model_version} is already pinned to {artefact_sha256[:12]}")
    return RolloutState.stable(state.model_version, state.storage_uri, artefact_sha256)


def promote_state(state: RolloutState) -> RolloutState:
    if state.phase == "stable":
        raise RolloutError(f"no canary to promote: version {state.model_version} already serves 100 %")
    if state.phase != "canary":
        raise RolloutError(
            f"version {state.model_version} is {state.phase} at 0 %: give it traffic first "
            f"(`churnops rollout {state.model_version} --canary N`), or `churnops rollout settle`"
        )
    return RolloutState.stable(state.model_version, state.storage_uri, state.artefact_sha256)


def abort_state(state: RolloutState) -> RolloutState:
    """KServe's rollback: 0 % to the latest revision, the spec (storageUri, pin) unchanged."""
    if state.phase not in ("canary", "staged") or state.model_version == state.stable_version:
        raise RolloutError(f"no canary to abort (phase {state.phase})")
    return replace(state, phase="aborted", canary_percent=0)


def settle_states(state: RolloutState) -> tuple[RolloutState, ...]:
    """After an abort: the spec back on the stable version, staged at 0 % until its revision is ready."""
    if state.phase not in ("aborted", "staged"):
        raise RolloutError(f"nothing to settle (phase {state.phase}): settle follows an abort")
    stable = RolloutState.stable(state.stable_version, state.stable_storage_uri, state.stable_artefact_sha256)
    staged = replace(stable, phase="staged", canary_percent=0)
    return (stable,) if state == staged else (staged, stable)


# --- the service ---------------------------------------------------------------------------------------


class Rollouts:
    """Rollout steps for one overlay, against one model registry."""

    def __init__(self, settings: ClusterSettings, registry: Registry, overlay: str | None = None) -> None:
        self.settings = settings
        self.registry = registry
        self.overlay = overlay or settings.rollout_overlay
        self.directory = overlay_dir(settings, self.overlay)

    def status(self) -> RolloutState:
        return read_state(self.directory)

    def version_of(self, reference: str) -> str:
        """The registry version a number or alias names (RolloutError when there is none)."""
        from churn_model.registry import RegistryError

        try:
            return self.registry.resolve(reference).version
        except RegistryError as error:
            raise RolloutError(str(error)) from error

    def _artefact_sha256(self, state: RolloutState, version: str) -> str:
        if state.model_version == version and state.artefact_sha256 is not None:
            return state.artefact_sha256
        return self._registry_sha256(version)

    def _registry_sha256(self, version: str) -> str:
        try:
            return self.registry.artefact_sha256(version)
        except Exception as error:  # MLflow raises its own and OSError types for a missing artefact
            raise RolloutError(f"version {version}: cannot read its manifest.json ({error})") from error

    def plan_start(self, reference: str, percent: int) -> Plan:
        before = self.status()
        version = self.version_of(reference)
        steps = start_states(
            before,
            version,
            percent,
            self.settings.storage_uri(version),
            self._artefact_sha256(before, version),
        )
        return Plan("start", self.overlay, before, steps)

    def plan_pin(self) -> Plan:
        before = self.status()
        digest = self._registry_sha256(before.model_version)
        return Plan("pin", self.overlay, before, (pin_state(before, digest),))

    def plan_promote(self) -> Plan:
        before = self.status()
        return Plan("promote", self.overlay, before, (promote_state(before),))

    def plan_abort(self) -> Plan:
        before = self.status()
        return Plan("abort", self.overlay, before, (abort_state(before),))

    def plan_settle(self) -> Plan:
        before = self.status()
        return Plan("settle", self.overlay, before, settle_states(before))

    # --- dry run ---

    def render_state(self, state: RolloutState) -> str:
        """The overlay rendered as if its rollout files held `state` (a scratch copy beside it)."""
        scratch = Path(tempfile.mkdtemp(prefix=f".{self.overlay}-dry-run-", dir=self.directory.parent))
        try:
            shutil.copytree(self.directory, scratch, dirs_exist_ok=True)
            write_state(scratch, state)
            return kustomize(self.settings, scratch)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def diff(self, plan: Plan) -> str:
        """The rendered manifests' unified diff, step by step (a staged plan shows both changes)."""
        texts = []
        now = plan.before == self.status()
        previous = render(self.settings, self.overlay) if now else self.render_state(plan.before)
        label = f"{self.overlay} ({'now' if now else plan.before.phase + ' ' + str(plan.before.canary_percent) + ' %'})"
        for index, state in enumerate(plan.steps, start=1):
            current = self.render_state(state)
            step = f"{self.overlay} ({state.phase} {state.canary_percent} %)"
            if len(plan.steps) > 1:
                step = (
                    f"{self.overlay} (step {index}/{len(plan.steps)}: {state.phase} {state.canary_percent} %)"
                )
            texts.append(
                "".join(
                    difflib.unified_diff(
                        previous.splitlines(keepends=True),
                        current.splitlines(keepends=True),
                        fromfile=label,
                        tofile=step,
                    )
                )
            )
            previous, label = current, step
        return "".join(texts)

    # --- execution ---

    def execute(
        self,
        plan: Plan,
        *,
        apply: bool = False,
        image_tag: str | None = None,
        wait: bool = True,
        on_wait: Callable[[list[str]], None] | None = None,
    ) -> Execution:
        """Write each state of the plan, apply it and wait for KServe if asked, then move the aliases.

        The cluster goes first: if `kubectl apply` fails the file is restored and the registry is left
        alone, so the aliases never claim a rollout that did not happen. If KServe does not report the
        change in time the applied state stays recorded (it is in the cluster) but the aliases do not move.
        Without --apply, a staged plan writes its first state only: apply it, then run the command again.
        """
        if self.status() != plan.before:
            raise RolloutError(f"{self.directory / 'rollout.yaml'} changed since the plan was made")
        execution = Execution()
        if apply and plan.action != "abort":  # a rollback must work whatever is in flight
            self._check_live_split(plan.before)
        steps = plan.steps if apply else plan.steps[:1]
        previous = plan.before
        for state in steps:
            write_state(self.directory, state)
            if apply:
                try:
                    started = time.monotonic()
                    rendered = self.apply(image_tag=image_tag)
                    applied_s = time.monotonic() - started
                except BaseException:
                    write_state(self.directory, previous)
                    raise
                ready_s = self.wait_serving(rendered, state, on_wait) if wait else 0.0
                execution.applied.append((state, applied_s, ready_s))
            previous = state
        if steps[-1] == plan.after:
            self._move_aliases(plan)
        return execution

    def _move_aliases(self, plan: Plan) -> None:
        from churn_model.registry import CHALLENGER

        client, name = self.registry.client, self.registry.name
        if plan.action == "start":
            client.set_registered_model_alias(name, CHALLENGER, plan.after.model_version)
        elif plan.action == "promote":
            self.registry.promote(plan.after.model_version)
        elif plan.action == "abort" and self.registry.alias_target(CHALLENGER) == plan.version:
            client.delete_registered_model_alias(name, CHALLENGER)

    def _kubectl(self) -> list[str]:
        command = [self.settings.kubectl_path()]
        if self.settings.kube_context:
            command += ["--context", self.settings.kube_context]
        return command

    def kserve(self) -> KServeStatus:
        return KServeStatus(self._kubectl(), self.settings.kube_namespace)

    def _check_live_split(self, before: RolloutState) -> None:
        """Refuse to act on a cluster whose split is not the one rollout.yaml records (a code canary from
        CI in flight, or a hand edit): the plan was made for the recorded one. No InferenceService yet
        (a first deploy) is fine."""
        live = self.kserve().inference_service()
        predictor = predictor_status(live) if live is not None else {}
        problems = traffic_problems(predictor, before.canary_percent) if predictor.get("traffic") else []
        if problems:
            raise RolloutError(
                f"the live InferenceService does not route what {self.directory / 'rollout.yaml'} records "
                f"({'; '.join(problems)}): finish or roll back the change in flight first"
            )

    def live_images(self) -> dict[str, str]:
        """The transformer's and predictor's image pins running now (immutable ones only), so that a model
        rollout does not also redeploy code; the overlay's pins for the rest."""
        result = subprocess.run(
            [
                *self._kubectl(),
                "--namespace",
                self.settings.kube_namespace,
                "get",
                "inferenceservice",
                "churn",
                "--output",
                f"jsonpath={LIVE_IMAGES}",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            return {}
        pins: dict[str, str] = {}
        for line in result.stdout.splitlines():
            reference = ImageRef.parse(line.strip()) if line.strip() else None
            if reference is not None and reference.name in IMAGES.values() and reference.immutable:
                pins.setdefault(reference.name, reference.digest or str(reference.tag))
        return pins

    def apply(self, *, image_tag: str | None = None) -> dict[str, Any]:
        """`kubectl apply -k` the overlay (with the live images kept); returns the applied InferenceService."""
        from churnops.cluster.validate import parse_documents

        images = None if image_tag else self.live_images()
        with deployable(self.settings, self.overlay, image_tag=image_tag, images=images) as directory:
            rendered = kustomize(self.settings, directory)
            result = subprocess.run([*self._kubectl(), "apply", "-k", str(directory)], check=False)
        if result.returncode != 0:
            raise RolloutError(f"kubectl apply -k failed (exit {result.returncode}); rollout file restored")
        return next(d for d in parse_documents(rendered) if d.get("kind") == "InferenceService")

    def wait_serving(
        self,
        inference_service: dict[str, Any],
        state: RolloutState,
        on_wait: Callable[[list[str]], None] | None = None,
    ) -> float:
        expected = Expectation.of_rendered(inference_service, require_ready=state.phase != "aborted")
        try:
            return self.kserve().wait(
                expected,
                self.settings.ready_timeout_s,
                self.settings.ready_poll_interval_s,
                on_wait,
            )
        except ServingNotReadyError as error:
            raise NotReadyError(f"applied, but {error}; registry aliases not moved") from error
