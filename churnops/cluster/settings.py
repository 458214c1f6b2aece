"""Settings of the cluster side (manifests, schemas, rollouts): one typed object, read once from CHURNOPS_CLUSTER_*."""

from __future__ import annotations

import shutil
from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SHARED_SCHEMAS = Path("../shared/schemas")
LOCAL_SCHEMAS = Path(".churnops/schemas")


class ToolMissingError(RuntimeError):
    """An external program the command drives (kubectl, kubernetes-validate, checkov) is not installed."""


class ClusterSettings(BaseSettings):
    """Where the manifests live, which schemas and tools check them, and how model versions map to storage."""

    model_config = SettingsConfigDict(env_prefix="CHURNOPS_CLUSTER_", extra="ignore")

    project_dir: Path = Field(default=Path("."), description="checkout holding kustomize/ and manifests/")
    schemas_dir: Path | None = Field(
        default=None,
        description="published CRDs (default: ../shared/schemas if present, else .churnops/schemas)",
    )
    schemas_base_url: str = Field(
        default="https://raw.githubusercontent.com", description="where `churnops schemas download` fetches"
    )
    # Where `churnops export VERSION DIR` + an upload put each version's serving artefact.
    storage_uri_template: str = Field(
        default="s3://churnops-models/churn-model/{version}",
        description="storageUri of a version's serving artefact; must contain {version}",
    )
    kubernetes_version: str = Field(default="1.32.0", description="core schemas of kubernetes-validate")
    tools_bin: Path | None = Field(
        default=None, description="kubernetes-validate, checkov, actionlint (default: .venv-tools/bin, PATH)"
    )
    kubectl: str = Field(default="kubectl", description="kubectl executable (>= 1.27, kustomize v5)")
    kube_context: str | None = Field(
        default=None, description="kubectl context for --apply (default: current)"
    )
    kube_namespace: str = Field(default="churnops", description="namespace of the churn InferenceService")
    rollout_overlay: str = Field(default="prod", description="overlay `churnops rollout` acts on by default")
    ready_timeout_s: float = Field(
        default=300.0,
        gt=0,
        description="how long `--apply` waits for KServe to report the split on the new revision (two pods "
        "at min-scale 2, image pulls, the model download)",
    )
    ready_poll_interval_s: float = Field(
        default=2.0, gt=0, description="interval of the readiness gate's `kubectl get` polls"
    )
    prometheus_url: str = Field(
        default="http://prometheus-operated.monitoring.svc:9090",
        description="Prometheus the automated canary analysis queries (`churnops rollout VERSION --auto`)",
    )
    prometheus_timeout_s: float = Field(default=30.0, gt=0, description="timeout of one Prometheus query")
    reports_dir: Path = Field(
        default=Path(".churnops/rollouts"),
        description="where canary reports are written (each is also logged to the version's MLflow run)",
    )

    @field_validator("storage_uri_template")
    @classmethod
    def _has_version(cls, value: str) -> str:
        if "{version}" not in value:
            raise ValueError("storage_uri_template must contain {version}")
        return value

    @property
    def kustomize_dir(self) -> Path:
        return self.project_dir / "kustomize"

    @property
    def overlays_dir(self) -> Path:
        return self.kustomize_dir / "overlays"

    @property
    def checkov_config(self) -> Path:
        """checkov's settings for the rendered manifests: the skipped checks, each with its reason."""
        return self.kustomize_dir / "checkov.yaml"

    def storage_uri(self, version: str) -> str:
        return self.storage_uri_template.format(version=version)

    def resolved_schemas_dir(self) -> Path:
        """The CRD folder validation reads: the setting, else the shared copy, else the downloaded one."""
        if self.schemas_dir is not None:
            return self.schemas_dir
        shared = self.project_dir / SHARED_SCHEMAS
        return shared if shared.is_dir() else self.project_dir / LOCAL_SCHEMAS

    def tool(self, name: str) -> Path:
        """An executable from tools_bin, the project's .venv-tools, or PATH."""
        candidates = [self.tools_bin] if self.tools_bin is not None else []
        candidates.append(self.project_dir / ".venv-tools" / "bin")
        for directory in candidates:
            path = directory / name
            if path.is_file():
                return path
        found = shutil.which(name)
        if found is None:
            raise ToolMissingError(
                f"{name} not found (run `make install`, or set CHURNOPS_CLUSTER_TOOLS_BIN)"
            )
        return Path(found)

    def kubectl_path(self) -> str:
        found = shutil.which(self.kubectl)
        if found is None:
            raise ToolMissingError(f"{self.kubectl} not found: kubectl >= 1.27 (kustomize v5) is needed")
        return found


@lru_cache(maxsize=1)
def get_settings() -> ClusterSettings:
    return ClusterSettings()
