"""The MLflow model registry as ChurnOps uses it: one registered model, aliases, a promotion history.

Aliases, not the deprecated stages: `champion` is what serves, `challenger` the newest candidate. MLflow
keeps no history of where an alias pointed, so promotions are recorded in a registered-model tag
(`champion_history`, a JSON list, oldest first) and `rollback` pops it.

Each version also carries what its rollouts found: `rollout_history` (a JSON list of canary steps and
decisions, newest last, bounded in bytes), `shadow_evaluation` (its comparison with the champion on the
prediction store's labelled customers), and the canary reports as artefacts of its run (`rollouts/`).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from churn_model.settings import ModelSettings

if TYPE_CHECKING:
    from mlflow import MlflowClient

CHAMPION = "champion"
CHALLENGER = "challenger"
HISTORY_TAG = "champion_history"
ROLLOUT_HISTORY_TAG = "rollout_history"
EVALUATION_TAG = "shadow_evaluation"
SERVING_ARTIFACT_PATH = "serving"
ROLLOUT_REPORTS_PATH = "rollouts"
# MLflow allows 100,000 characters in a registry tag value (mlflow/utils/validation.py,
# MAX_MODEL_REGISTRY_TAG_VALUE_LENGTH); the history keeps its newest events within a smaller bound.
ROLLOUT_HISTORY_MAX_BYTES = 64_000


class RegistryError(RuntimeError):
    """A registry operation that cannot be done as asked (unknown version, nothing to roll back to)."""


@dataclass(frozen=True)
class VersionInfo:
    version: str
    run_id: str
    aliases: tuple[str, ...]
    created_at_ms: int
    metrics: dict[str, float]

    @property
    def serving_uri(self) -> str:
        return f"runs:/{self.run_id}/{SERVING_ARTIFACT_PATH}"


class Registry:
    """Registry operations for the `churn-model` registered model against any MLflow tracking URI."""

    def __init__(self, settings: ModelSettings) -> None:
        self.settings = settings
        self.name = settings.registered_name
        self._client: MlflowClient | None = None

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            import mlflow

            if self.settings.mlflow_uri is None:
                self.settings.home.mkdir(parents=True, exist_ok=True)
            mlflow.set_tracking_uri(self.settings.tracking_uri)
            mlflow.set_registry_uri(self.settings.tracking_uri)
            self._client = mlflow.MlflowClient(self.settings.tracking_uri, self.settings.tracking_uri)
        return self._client

    def ensure_experiment(self) -> str:
        """Experiment id of `settings.experiment`, created (with a local artefact root by default) if new."""
        experiment = self.client.get_experiment_by_name(self.settings.experiment)
        if experiment is not None:
            return str(experiment.experiment_id)
        location = None if self.settings.mlflow_uri else self.settings.artifact_location
        return str(self.client.create_experiment(self.settings.experiment, artifact_location=location))

    def versions(self) -> list[VersionInfo]:
        """All registered versions, newest first."""
        from mlflow.exceptions import MlflowException

        try:
            found = self.client.search_model_versions(f"name = '{self.name}'")
        except MlflowException:
            return []
        infos = [self._info(v.version) for v in found]
        return sorted(infos, key=lambda info: int(info.version), reverse=True)

    def has_versions(self) -> bool:
        return bool(self.versions())

    def _info(self, version: str) -> VersionInfo:
        model_version = self.client.get_model_version(self.name, version)
        run_id = model_version.run_id or model_version.tags.get("run_id", "")
        metrics = dict(self.client.get_run(run_id).data.metrics) if run_id else {}
        return VersionInfo(
            version=str(model_version.version),
            run_id=run_id,
            aliases=tuple(model_version.aliases),
            created_at_ms=int(model_version.creation_timestamp),
            metrics=metrics,
        )

    def resolve(self, version_or_alias: str | None = None) -> VersionInfo:
        """A version by number or alias; default: the champion."""
        from mlflow.exceptions import MlflowException

        reference = version_or_alias or CHAMPION
        try:
            if reference.isdigit():
                return self._info(reference)
            return self._info(str(self.client.get_model_version_by_alias(self.name, reference).version))
        except MlflowException as error:
            raise RegistryError(f"{self.name}: no version or alias {reference!r}") from error

    def alias_target(self, alias: str) -> str | None:
        try:
            return self.resolve(alias).version
        except RegistryError:
            return None

    def history(self) -> list[str]:
        tags = self.client.get_registered_model(self.name).tags
        return [str(v) for v in json.loads(tags.get(HISTORY_TAG, "[]"))]

    def _set_history(self, history: list[str]) -> None:
        self.client.set_registered_model_tag(self.name, HISTORY_TAG, json.dumps(history))

    def register(self, model_uri: str, run_id: str) -> str:
        """Register a logged model; the first version becomes champion, later ones challenger."""
        import mlflow

        _ = self.client  # configure tracking and registry URIs first
        registered = mlflow.register_model(model_uri, self.name, tags={"run_id": run_id})
        version = str(registered.version)
        if self.alias_target(CHAMPION) is None:
            self.client.set_registered_model_alias(self.name, CHAMPION, version)
            self._set_history([version])
        else:
            self.client.set_registered_model_alias(self.name, CHALLENGER, version)
        return version

    def promote(self, version: str) -> str | None:
        """Make `version` the champion; returns the previous champion (kept in the history)."""
        target = self.resolve(version).version
        previous = self.alias_target(CHAMPION)
        if previous == target:
            return previous
        self.client.set_registered_model_alias(self.name, CHAMPION, target)
        if self.alias_target(CHALLENGER) == target:
            self.client.delete_registered_model_alias(self.name, CHALLENGER)
        self._set_history([*self.history(), target])
        return previous

    def rollback(self) -> tuple[str, str]:
        """Return `champion` to the version it held before the last promotion; returns (from, to)."""
        history = self.history()
        current = self.alias_target(CHAMPION)
        if len(history) < 2 or current is None:
            raise RegistryError("no earlier champion to roll back to")
        history.pop()
        target = history[-1]
        self.client.set_registered_model_alias(self.name, CHAMPION, target)
        self._set_history(history)
        return current, target

    # --- what rollouts record per version ---

    def artefact_sha256(self, version: str) -> str:
        """sha256 of the version's `manifest.json` (the digest a rollout pins into the InferenceService)."""
        import hashlib

        import mlflow

        info = self.resolve(version)
        _ = self.client
        with tempfile.TemporaryDirectory(prefix="churnops-manifest-") as scratch:
            path = Path(
                mlflow.artifacts.download_artifacts(
                    run_id=info.run_id,
                    artifact_path=f"{SERVING_ARTIFACT_PATH}/manifest.json",
                    dst_path=scratch,
                )
            )
            return hashlib.sha256(path.read_bytes()).hexdigest()

    def _version_tag(self, version: str, key: str) -> str | None:
        value = self.client.get_model_version(self.name, version).tags.get(key)
        return None if value is None else str(value)

    def rollout_history(self, version: str) -> list[dict[str, object]]:
        raw = self._version_tag(version, ROLLOUT_HISTORY_TAG)
        events: list[dict[str, object]] = json.loads(raw) if raw else []
        return events

    def record_rollout_event(self, version: str, event: dict[str, object]) -> None:
        """Append one canary step or decision to the version's history, dropping the oldest past the bound."""
        events = [*self.rollout_history(version), event]
        encoded = json.dumps(events, separators=(",", ":"))
        while len(encoded.encode()) > ROLLOUT_HISTORY_MAX_BYTES and len(events) > 1:
            events = events[1:]
            encoded = json.dumps(events, separators=(",", ":"))
        self.client.set_model_version_tag(self.name, version, ROLLOUT_HISTORY_TAG, encoded)

    def record_evaluation(self, version: str, result: dict[str, object]) -> None:
        self.client.set_model_version_tag(self.name, version, EVALUATION_TAG, json.dumps(result))

    def evaluation(self, version: str) -> dict[str, object] | None:
        raw = self._version_tag(version, EVALUATION_TAG)
        result: dict[str, object] | None = json.loads(raw) if raw else None
        return result

    def log_rollout_report(self, version: str, report: Path) -> None:
        """Keep a canary report with the version's run (artefact `rollouts/<file>`)."""
        info = self.resolve(version)
        self.client.log_artifact(info.run_id, str(report), ROLLOUT_REPORTS_PATH)

    def download_serving(self, version: VersionInfo, destination: Path) -> Path:
        """Copy the version's serving artefact (what KServe loads) into `destination`, replacing it."""
        import mlflow

        _ = self.client
        with tempfile.TemporaryDirectory(prefix="churnops-export-") as scratch:
            local = Path(
                mlflow.artifacts.download_artifacts(
                    run_id=version.run_id, artifact_path=SERVING_ARTIFACT_PATH, dst_path=scratch
                )
            )
            if destination.exists():
                shutil.rmtree(destination)
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(local, destination)
        return destination
