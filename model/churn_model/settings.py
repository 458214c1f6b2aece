"""Settings of the training side (data, registry, scoring): one typed object, read once from CHURNOPS_MODEL_*."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

TELCO_URL = (
    "https://raw.githubusercontent.com/IBM/telco-customer-churn-on-icp4d/master/data/Telco-Customer-Churn.csv"
)
TELCO_SHA256 = "16320c9c1ec72448db59aa0a26a0b95401046bef5d02fd3aeb906448e3055e91"


class ModelSettings(BaseSettings):
    """Where data and models live. Defaults need no service: SQLite registry under `home`."""

    model_config = SettingsConfigDict(env_prefix="CHURNOPS_MODEL_", extra="ignore")

    data: Path | None = Field(default=None, description="Telco CSV; else ./data/ then ../shared/data/")
    home: Path = Field(default=Path(".churnops"), description="Local state: registry, artefacts, reports")
    mlflow_uri: str | None = Field(default=None, description="MLflow tracking/registry URI (default: SQLite)")
    registered_name: str = Field(
        default="churn-model", description="name of the model in the MLflow registry"
    )
    experiment: str = Field(default="churn", description="MLflow experiment of the training runs")
    seed: int = Field(default=42, description="seed of the split, the cross-validation and the models")
    data_url: str = Field(default=TELCO_URL, description="where `churnops data download` fetches the CSV")
    data_sha256: str = Field(default=TELCO_SHA256, description="the downloaded CSV must have this sha256")

    @property
    def tracking_uri(self) -> str:
        if self.mlflow_uri:
            return self.mlflow_uri
        return f"sqlite:///{(self.home / 'mlflow.db').resolve()}"

    @property
    def artifact_location(self) -> str:
        """Artefact root for experiments created against the default SQLite store."""
        return (self.home / "mlartifacts").resolve().as_uri()

    @property
    def models_dir(self) -> Path:
        """Exported serving artefacts, one directory per registered version."""
        return self.home / "models"


@lru_cache(maxsize=1)
def get_settings() -> ModelSettings:
    return ModelSettings()
