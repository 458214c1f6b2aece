"""Settings of the local stack (`churnops serve`, the tests, the benchmarks): one typed object, read once.

Each runtime has its own environment, as in the cluster each has its own image (KServe and MLServer pin
incompatible FastAPI releases; alibi-detect needs numpy<2), so the stack starts the predictor and the
detector with their environments' interpreters.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class StackSettings(BaseSettings):
    """Where the side environments of the local stack live (`make install` creates them)."""

    model_config = SettingsConfigDict(env_prefix="CHURNOPS_STACK_", extra="ignore")

    predictor_python: Path = Field(
        default=Path(".venv-predictor") / "bin" / "python",
        description="Python of the predictor environment (MLServer + the pinned scikit-learn)",
    )
    detector_python: Path = Field(
        default=Path(".venv-drift") / "bin" / "python",
        description="Python of the detector environment (alibi-detect, numpy<2)",
    )


@lru_cache(maxsize=1)
def get_stack_settings() -> StackSettings:
    return StackSettings()
