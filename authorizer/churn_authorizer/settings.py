"""Settings of the external authorizer: one typed object, read once from CHURNOPS_AUTHORIZER_*."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from churn_core.http import keep_alive_timeout_field

DEFAULT_KEYS_FILE = Path("/etc/churnops/keys/keys.json")
DEFAULT_SECRET_MANIFEST = Path("kustomize/base/secrets/api-keys.yaml")


class AuthorizerSettings(BaseSettings):
    """Everything the authorizer process and the `churnops keys` commands need.

    The rate limit is one budget per key shared by every replica (it lives in Redis); `rate_limit` requests
    per `rate_period_s` is the sustained rate and also the largest burst a rested key may send at once.
    """

    model_config = SettingsConfigDict(env_prefix="CHURNOPS_AUTHORIZER_", extra="ignore")

    host: str = Field(default="127.0.0.1", description="bind address; the image sets 0.0.0.0")
    port: int = Field(default=8000, ge=1, le=65535, description="HTTP port Envoy's ext_authz calls")
    keep_alive_timeout_s: int = keep_alive_timeout_field()
    log_level: str = Field(default="INFO", description="log level of the JSON log lines")

    # Envoy sends the check to `<path_prefix><original path>`; must equal `pathPrefix` in the mesh config.
    check_prefix: str = Field(
        default="/check", description="path prefix of the checks; equals `pathPrefix` in the mesh config"
    )
    # Passed upstream on allow (listed in `headersToUpstreamOnAllow`); carries the key id, never the key.
    key_id_header: str = Field(
        default="x-churnops-key-id",
        description="header carrying the key id upstream on allow (never the key)",
    )

    keys_file: Path = Field(default=DEFAULT_KEYS_FILE, description="keys.json mounted from the keys Secret")
    keys_reload_interval_s: float = Field(default=10.0, ge=0.0, description="how often to stat keys_file")
    secret_manifest: Path = Field(
        default=DEFAULT_SECRET_MANIFEST, description="Secret manifest that `churnops keys` edits"
    )

    redis_url: SecretStr = Field(
        default=SecretStr("redis://127.0.0.1:6379/0"), description="Redis holding the shared rate limits"
    )
    redis_prefix: str = Field(default="churnops:authz:", description="prefix of every Redis key we write")
    # Envoy waits for us (mesh `timeout`, 0.5 s in our snippet): Redis must answer well inside that.
    redis_timeout_s: float = Field(default=0.1, gt=0.0, description="longest wait for one Redis answer")
    # The circuit breaker in front of Redis (churn_authorizer.breaker): isolated errors cost one request its
    # limit check; only sustained failure opens the circuit, and then Redis is skipped for a while.
    redis_retry_interval_s: float = Field(
        default=1.0,
        ge=0.0,
        description="once the Redis circuit opens, apply the failure mode this long before one probe call",
    )
    redis_breaker_failures: int = Field(
        default=5, ge=1, description="consecutive Redis failures that open the circuit"
    )
    redis_breaker_failure_ratio: float = Field(
        default=0.5,
        gt=0.0,
        le=1.0,
        description="failure ratio over redis_breaker_window_s that opens the circuit",
    )
    redis_breaker_min_calls: int = Field(
        default=20, ge=1, description="calls in the window before the failure ratio counts"
    )
    redis_breaker_window_s: float = Field(
        default=10.0, gt=0.0, description="window of the failure ratio, in seconds"
    )
    redis_failure_mode: Literal["open", "closed"] = Field(
        default="open", description="without Redis: allow without limits (open) or refuse with 429 (closed)"
    )
    fail_closed_retry_after_s: int = Field(
        default=1, ge=1, description="Retry-After of the 429 answered while failing closed"
    )

    rate_limit: int = Field(default=100, ge=1, description="requests per rate_period_s, per key")
    rate_period_s: float = Field(default=60.0, gt=0.0, description="the period of rate_limit, in seconds")

    @field_validator("check_prefix")
    @classmethod
    def _prefix_shape(cls, value: str) -> str:
        if not value.startswith("/") or value.endswith("/"):
            raise ValueError("check_prefix must start with '/' and not end with '/' (e.g. '/check')")
        return value

    @field_validator("key_id_header")
    @classmethod
    def _lower_header(cls, value: str) -> str:
        return value.lower()


@lru_cache(maxsize=1)
def get_settings() -> AuthorizerSettings:
    return AuthorizerSettings()
