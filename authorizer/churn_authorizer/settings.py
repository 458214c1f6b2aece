"""Settings of the external authorizer: one typed object, read once from CHURNOPS_AUTHORIZER_*."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_KEYS_FILE = Path("/etc/churnops/keys/keys.json")
DEFAULT_SECRET_MANIFEST = Path("kustomize/base/secrets/api-keys.yaml")


class AuthorizerSettings(BaseSettings):
    """Everything the authorizer process and the `churnops keys` commands need.

    The rate limit is one budget per key shared by every replica (it lives in Redis); `rate_limit` requests
    per `rate_period_s` is the sustained rate and also the largest burst a rested key may send at once.
    """

    model_config = SettingsConfigDict(env_prefix="CHURNOPS_AUTHORIZER_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    log_level: str = "INFO"

    # Envoy sends the check to `<path_prefix><original path>`; must equal `pathPrefix` in the mesh config.
    check_prefix: str = "/check"
    # Passed upstream on allow (listed in `headersToUpstreamOnAllow`); carries the key id, never the key.
    key_id_header: str = "x-churnops-key-id"

    keys_file: Path = Field(default=DEFAULT_KEYS_FILE, description="keys.json mounted from the keys Secret")
    keys_reload_interval_s: float = Field(default=10.0, ge=0.0, description="how often to stat keys_file")
    secret_manifest: Path = Field(
        default=DEFAULT_SECRET_MANIFEST, description="Secret manifest that `churnops keys` edits"
    )

    redis_url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")
    redis_prefix: str = "churnops:authz:"
    # Envoy waits for us (mesh `timeout`, 0.5 s in our snippet): Redis must answer well inside that.
    redis_timeout_s: float = Field(default=0.1, gt=0.0)
    # After a Redis error, skip Redis for this long (apply `redis_failure_mode` directly) instead of paying
    # the timeout on every request of an outage.
    redis_retry_interval_s: float = Field(default=1.0, ge=0.0)
    redis_failure_mode: Literal["open", "closed"] = "open"
    fail_closed_retry_after_s: int = Field(default=1, ge=1)

    rate_limit: int = Field(default=100, ge=1, description="requests per rate_period_s, per key")
    rate_period_s: float = Field(default=60.0, gt=0.0)

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
