"""Settings of the monitoring side (drift detector, prediction store, feedback): one typed object, read
once from CHURNOPS_DETECTOR_*."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from churn_core.http import keep_alive_timeout_field

MIB = 1 << 20


class DetectorSettings(BaseSettings):
    """Everything the monitoring processes and `churnops monitor ...` commands read from the environment."""

    model_config = SettingsConfigDict(env_prefix="CHURNOPS_DETECTOR_", extra="ignore")

    # --- drift detection (churn_monitoring.drift) ---
    # alibi-detect is the design's default; "scipy" runs the same tests without its BSL-1.1 licence.
    drift_backend: Literal["alibi", "scipy"] = Field(
        default="alibi", description="alibi-detect (the default) or the same tests in scipy"
    )
    # 0.01: at most one quiet window in a hundred raises a false alarm, whatever the window size.
    drift_p_value: float = Field(
        default=0.01, gt=0.0, lt=1.0, description="family-wise significance (false-alarm rate of a window)"
    )
    drift_correction: Literal["bonferroni", "fdr"] = Field(
        default="bonferroni", description="multiple-testing correction over the fields of a window"
    )
    # Effect-size floors: a field drifts only when significant AND at least this material.
    drift_category_floor: float = Field(
        default=0.05,
        ge=0.0,
        le=1.0,
        description="categories: total variation distance floor (share of customers changing category)",
    )
    drift_number_floor: float = Field(
        default=0.03,
        ge=0.0,
        description="numbers: Wasserstein distance / reference mean floor (0.05 = a 5 % level shift)",
    )
    # Model-aware severity: a drift pages only when it moves the model's output this much (0.005: half a
    # point, 2 % of the reference's 26.6 % predicted churn rate).
    drift_impact_threshold: float = Field(
        default=0.005,
        ge=0.0,
        le=1.0,
        description="page when a drift moves the predicted churn rate or High/Very High share this much",
    )
    drift_impact_f1_drop: float = Field(
        default=0.02, ge=0.0, le=1.0, description="page when a drift lowers the CBPE-estimated F1 this much"
    )

    # --- detector service, prediction store, feedback, live performance (churn_monitoring.service) ---
    home: Path = Field(default=Path(".churnops"), description="local state: SQLite store, spill files")
    model_dir: Path | None = Field(
        default=None, description="serving artefact the detector compares with (reference sample, contract)"
    )
    host: str = Field(default="127.0.0.1", description="bind address; the image sets 0.0.0.0")
    port: int = Field(default=8095, ge=1, le=65535, description="HTTP port")
    keep_alive_timeout_s: int = keep_alive_timeout_field()
    url: str = Field(
        default="http://127.0.0.1:8095", description="where `churnops feedback` posts; links in alerts"
    )
    api_key: SecretStr | None = Field(
        default=None,
        description=(
            "API key `churnops feedback` sends as `Authorization: Bearer` (the authorizer in front of the "
            "detector wants the `feedback` scope); never printed"
        ),
    )
    database_url: SecretStr | None = Field(
        default=None, description="SQLAlchemy URL of the prediction store (default: SQLite under home)"
    )
    store_batch_rows: int = Field(default=500, ge=1, description="rows per INSERT batch")
    store_flush_seconds: float = Field(default=0.5, gt=0.0, description="longest a row waits for a batch")
    store_memory_rows: int = Field(default=20_000, ge=1, description="rows kept in memory before spilling")
    store_memory_bytes: int = Field(
        default=32 * MIB, ge=64 * 1024, description="bytes of rows (as JSON) kept in memory before spilling"
    )
    store_spill_dir: Path | None = Field(default=None, description="spill files (default: home/spill)")
    store_spill_max_bytes: int = Field(
        default=512 * MIB,
        ge=MIB,
        description="disk the spill directory may use; rows past it are dropped and counted (alerted)",
    )
    store_retry_max_seconds: float = Field(default=5.0, gt=0.0, description="back-off ceiling, DB down")
    join_max_pending: int = Field(default=10_000, ge=1, description="request/response halves held for a join")
    join_max_bytes: int = Field(
        default=64 * MIB,
        ge=MIB,
        description="memory the halves waiting for a join may hold (estimated); the oldest are evicted past it",
    )
    join_ttl_seconds: float = Field(default=120.0, gt=0.0, description="how long a half waits for the other")
    dedupe_ttl_seconds: float = Field(
        default=600.0, gt=0.0, description="how long a received event is remembered to spot a re-delivery"
    )
    dedupe_max_keys: int = Field(
        default=100_000, ge=100, description="events remembered for de-duplication (about 150 bytes each)"
    )
    known_versions: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description=(
            "model versions besides the artefact's that get their own `model_version` metric label "
            "(comma-separated, e.g. the canary's); others are counted as `unknown`"
        ),
    )
    window_size: int = Field(default=500, ge=10, description="customers per drift window")
    window_min_size: int = Field(default=100, ge=10, description="fewest rows an aged window needs")
    window_max_age_seconds: float = Field(default=3600.0, gt=0.0, description="oldest customer in a window")
    max_event_bytes: int = Field(default=8 * MIB, ge=1024, description="largest payload event accepted")
    max_feedback_bytes: int = Field(
        default=2 * MIB, ge=1024, description="largest POST /feedback body accepted"
    )
    max_json_depth: int = Field(
        default=32, ge=4, le=512, description="deepest JSON nesting accepted in a body"
    )
    max_json_values: int = Field(
        default=250_000,
        ge=1000,
        description=(
            "most JSON values (numbers, strings, keys, arrays, objects) in one body, which bounds its parsed "
            "size; an event of the transformer's 1,000 customers holds about 45,000"
        ),
    )
    inflight_max_bytes: int = Field(
        default=64 * MIB,
        ge=MIB,
        description="request bodies read and parsed at once; a request past it waits for room",
    )
    inflight_wait_seconds: float = Field(
        default=10.0, gt=0.0, description="longest a request waits for room before a 503 (retry later)"
    )
    slack_webhook_url: SecretStr | None = Field(default=None, description="Slack incoming-webhook URL")
    slack_webhook_url_file: Path | None = Field(
        default=None, description="file holding the webhook URL (a mounted Secret); wins over the variable"
    )
    alert_cooldown_seconds: float = Field(default=3600.0, ge=0.0, description="same alert at most this often")
    feedback_horizon_days: float = Field(default=90.0, gt=0.0, description="label joins predictions this old")
    performance_window_days: float = Field(default=30.0, gt=0.0, description="rolling performance window")
    performance_f1_threshold: float = Field(default=0.60, ge=0.0, le=1.0, description="alert below this F1")
    performance_min_labels: int = Field(default=200, ge=1, description="labels needed before alerting on F1")
    performance_interval_seconds: float = Field(default=60.0, gt=0.0, description="live-performance refresh")

    @field_validator("known_versions", mode="before")
    @classmethod
    def _split_versions(cls, value: object) -> object:
        """`CHURNOPS_DETECTOR_KNOWN_VERSIONS=3,4` as well as a list."""
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value


@lru_cache(maxsize=1)
def get_settings() -> DetectorSettings:
    return DetectorSettings()
