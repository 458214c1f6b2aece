"""Settings of the training side (data, registry, scoring): one typed object, read once from CHURNOPS_*."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

TELCO_URL = (
    "https://raw.githubusercontent.com/IBM/telco-customer-churn-on-icp4d/master/data/Telco-Customer-Churn.csv"
)
TELCO_SHA256 = "16320c9c1ec72448db59aa0a26a0b95401046bef5d02fd3aeb906448e3055e91"
DATA_FILE_NAME = "telco-customer-churn.csv"


class ModelSettings(BaseSettings):
    """Where data and models live. Defaults need no service: SQLite registry under `home`."""

    model_config = SettingsConfigDict(env_prefix="CHURNOPS_", extra="ignore")

    data: Path | None = Field(default=None, description="Telco CSV; else ./data/ then ../shared/data/")
    home: Path = Field(default=Path(".churnops"), description="Local state: registry, artefacts, reports")
    mlflow_uri: str | None = Field(default=None, description="MLflow tracking/registry URI (default: SQLite)")
    model_name: str = "churn-model"
    experiment: str = "churn"
    seed: int = 42
    data_url: str = TELCO_URL
    data_sha256: str = TELCO_SHA256

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
