"""Canary rollouts of model versions by KServe traffic split, with the registry aliases following along.

- start (`churnops rollout VERSION --canary N`): the InferenceService serves VERSION's artefact; KServe
  creates a new predictor revision and sends it N % (`canaryTrafficPercent`), the previously rolled-out
  revision keeps the rest. Registry: `challenger` = VERSION. Repeating it with another N moves the split of
  the same canary.
- promote: 100 % to the new revision, which becomes the rolled-out one. Registry: VERSION becomes
  `champion` (Registry.promote, which records the history and clears `challenger`).
- abort: `canaryTrafficPercent: 0` with the spec back on the stable version: all traffic returns to the
  previous revision, which never stopped running, so it is a route change and not a redeploy (seconds).
  Registry: `challenger` is cleared if it named VERSION; `champion` never changed.

The transformer is collocated with the predictor (spec.predictor.containers, `transformer-container`), so
a revision holds one model version of both halves and the predictor's split moves them together: a new
transformer only ever talks to its own pod's MLServer, at its own version.

The state lives in the overlay's rollout.yaml (git, GitOps): every command edits it, `--apply` also
applies it with kubectl when a kube context is at hand, `--dry-run` only prints the rendered diff.
"""

from __future__ import annotations

import difflib
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from churnops.cluster.render import deployable, kustomize, overlay_dir, render
from churnops.cluster.settings import ClusterSettings
from churnops.cluster.state import RolloutState, read_state, write_state

if TYPE_CHECKING:
    from churn_model.registry import Registry

Action = Literal["start", "promote", "settle", "abort"]
READY_TIMEOUT_S = 120
# kubectl jsonpath: the collocated transformer's image, then (one per line) the pre-collocation layout's.
LIVE_TRANSFORMER_IMAGE = (
    '{.spec.predictor.containers[?(@.name=="transformer-container")].image}{"\\n"}'
    "{.spec.transformer.containers[0].image}"
)


class RolloutError(RuntimeError):
    """A rollout step that does not apply to the current state (or a version the registry lacks)."""


class NotReadyError(RolloutError):
    """Applied, but the InferenceService did not report Ready in time."""


@dataclass(frozen=True)
class Plan:
    """One rollout step: the state before and after, and what it means."""

    action: Action
    overlay: str
    before: RolloutState
    after: RolloutState

    @property
    def version(self) -> str:
        return self.before.model_version if self.action == "abort" else self.after.model_version

    def describe(self) -> str:
        after = self.after
        if self.action == "start":
            return (
                f"{self.overlay}: canary of version {after.model_version} at {after.canary_percent} % "
                f"({100 - after.canary_percent} % stays on version {after.stable_version})"
            )
        if self.action == "promote":
            return f"{self.overlay}: version {after.model_version} promoted to 100 % and champion"
        if self.action == "settle":
            return f"{self.overlay}: the aborted rollout settled, version {after.model_version} at 100 %"
        return (
            f"{self.overlay}: canary of version {self.before.model_version} aborted, all traffic back on "
            f"version {after.stable_version}"
        )


# --- transitions (pure) --------------------------------------------------------------------------------


def start_state(state: RolloutState, version: str, percent: int, storage_uri: str) -> RolloutState:
    if not 0 < percent < 100:
        raise RolloutError(f"--canary must be between 1 and 99, not {percent}")
    if state.phase == "canary":
        if state.model_version != version:
            raise RolloutError(
                f"version {state.model_version} is already in canary: promote or abort it before "
                f"rolling out version {version}"
            )
        return state.with_percent(percent)
    if version == state.stable_version:
        raise RolloutError(f"version {version} already serves all traffic")
    return RolloutState(
        "canary", version, state.stable_version, storage_uri, state.stable_storage_uri, percent
    )


def promote_state(state: RolloutState) -> tuple[Action, RolloutState]:
    if state.phase == "stable":
        raise RolloutError(f"no canary to promote: version {state.model_version} already serves 100 %")
    # Aborted: the latest revisions serve the stable version again; promoting them settles the rollout.
    action: Action = "promote" if state.phase == "canary" else "settle"
    return action, RolloutState.stable(state.model_version, state.storage_uri)


def abort_state(state: RolloutState) -> RolloutState:
    if state.phase != "canary":
        raise RolloutError(f"no canary to abort (phase {state.phase})")
    return RolloutState(
        "aborted",
        state.stable_version,
        state.stable_version,
        state.stable_storage_uri,
        state.stable_storage_uri,
        0,
    )


# --- the service ---------------------------------------------------------------------------------------


def image_tag_of(image: str) -> str | None:
    """`repo/name:tag` → tag (None for a digest or no tag)."""
    if "@" in image:
        return None
    name = image.rsplit("/", 1)[-1]
    return name.rsplit(":", 1)[1] if ":" in name else None


class Rollouts:
    """Rollout steps for one overlay, against one model registry."""

    def __init__(self, settings: ClusterSettings, registry: Registry, overlay: str | None = None) -> None:
        self.settings = settings
        self.registry = registry
        self.overlay = overlay or settings.rollout_overlay
        self.directory = overlay_dir(settings, self.overlay)

    def status(self) -> RolloutState:
        return read_state(self.directory)

    def _version(self, reference: str) -> str:
        from churn_model.registry import RegistryError

        try:
            return self.registry.resolve(reference).version
        except RegistryError as error:
            raise RolloutError(str(error)) from error

    def plan_start(self, reference: str, percent: int) -> Plan:
        before = self.status()
        version = self._version(reference)
        after = start_state(before, version, percent, self.settings.storage_uri(version))
        return Plan("start", self.overlay, before, after)

    def plan_promote(self) -> Plan:
        before = self.status()
        action, after = promote_state(before)
        return Plan(action, self.overlay, before, after)

    def plan_abort(self) -> Plan:
        before = self.status()
        return Plan("abort", self.overlay, before, abort_state(before))

    # --- dry run ---

    def render_state(self, state: RolloutState) -> str:
        """The overlay rendered as if its rollout file held `state` (a scratch copy beside it)."""
        scratch = Path(tempfile.mkdtemp(prefix=f".{self.overlay}-dry-run-", dir=self.directory.parent))
        try:
            for item in self.directory.iterdir():
                if item.is_file():
                    shutil.copy2(item, scratch / item.name)
            write_state(scratch, state)
            return kustomize(self.settings, scratch)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def diff(self, plan: Plan) -> str:
        before = render(self.settings, self.overlay)
        after = self.render_state(plan.after)
        return "".join(
            difflib.unified_diff(
                before.splitlines(keepends=True),
                after.splitlines(keepends=True),
                fromfile=f"{self.overlay} (now)",
                tofile=f"{self.overlay} ({plan.action})",
            )
        )

    # --- execution ---

    def execute(
        self, plan: Plan, *, apply: bool = False, image_tag: str | None = None, wait: bool = True
    ) -> None:
        """Write the state, apply it if asked, then move the registry aliases.

        The cluster goes first: if `kubectl apply` fails the file is restored and the registry is left
        alone, so the aliases never claim a rollout that did not happen. If the InferenceService does not
        become Ready in time the change stays applied (and recorded) but the aliases do not move.
        """
        if self.status() != plan.before:
            raise RolloutError(f"{self.directory / 'rollout.yaml'} changed since the plan was made")
        write_state(self.directory, plan.after)
        if apply:
            try:
                self.apply(image_tag=image_tag)
            except BaseException:
                write_state(self.directory, plan.before)
                raise
            if wait:
                self.wait_ready()
        self._move_aliases(plan)

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

    def live_image_tag(self) -> str | None:
        """The transformer image tag running now, so that a rollout does not also redeploy code.

        The collocated transformer-container first; then the layout before collocation (spec.transformer),
        so that the first rollout on a cluster not yet migrated keeps its images too.
        """
        result = subprocess.run(
            [
                *self._kubectl(),
                "--namespace",
                self.settings.kube_namespace,
                "get",
                "inferenceservice",
                "churn",
                "--output",
                f"jsonpath={LIVE_TRANSFORMER_IMAGE}",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            return None
        images = [line.strip() for line in result.stdout.splitlines() if line.strip()]
        return image_tag_of(images[0]) if images else None

    def apply(self, *, image_tag: str | None = None) -> None:
        tag = image_tag or self.live_image_tag()
        with deployable(self.settings, self.overlay, image_tag=tag) as directory:
            result = subprocess.run([*self._kubectl(), "apply", "-k", str(directory)], check=False)
        if result.returncode != 0:
            raise RolloutError(f"kubectl apply -k failed (exit {result.returncode}); rollout file restored")

    def wait_ready(self) -> None:
        result = subprocess.run(
            [
                *self._kubectl(),
                "--namespace",
                self.settings.kube_namespace,
                "wait",
                "--for=condition=Ready",
                "inferenceservice/churn",
                f"--timeout={READY_TIMEOUT_S}s",
            ],
            check=False,
        )
        if result.returncode != 0:
            raise NotReadyError(
                f"applied, but inferenceservice/churn is not Ready after {READY_TIMEOUT_S} s: registry aliases "
                "not moved (kubectl -n churnops describe inferenceservice churn)"
            )
