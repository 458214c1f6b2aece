"""Settings of the transformer: one typed object, read once from CHURNOPS_TRANSFORMER_* environment variables.

KServe passes `--model_name`, `--predictor_host`, `--http_port`, `--workers`... as command-line arguments
(kserve.model_server's parser); those win over the environment for the values they carry. The hop to the
predictor is always gRPC v2 (raw FP64 tensors: no JSON encoding of 47 floats per customer on either side,
and the predictor's gRPC path is about twice as fast as its REST path; README, benchmark).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class TransformerSettings(BaseSettings):
    """Everything the transformer process needs besides KServe's own arguments."""

    model_config = SettingsConfigDict(env_prefix="CHURNOPS_TRANSFORMER_", extra="ignore")

    model_dir: Path = Field(
        default=Path("/mnt/models"), description="the serving artefact (KServe storageUri)"
    )
    host: str = Field(default="127.0.0.1", description="bind address; the image sets 0.0.0.0")
    http_port: int = Field(default=8080, ge=1, le=65535, description="default of --http_port")
    log_level: str = Field(default="INFO", description="log level of the JSON log lines")

    model_name: str = Field(
        default="churn", description="the served model's name (KServe's --model_name wins)"
    )
    predictor_host: str | None = Field(
        default=None, description="host:port of the predictor (KServe's --predictor_host wins)"
    )
    artefact_sha256: str | None = Field(
        default=None,
        pattern=r"^[0-9a-fA-F]{64}$",
        description="sha256 of the artefact's manifest.json the deployment pins (churnops rollout writes "
        "it); when set, any other artefact is refused at start (exit 2)",
    )
    predictor_timeout_s: float = Field(default=10.0, gt=0.0, description="one predictor call")
    startup_timeout_s: float = Field(
        default=120.0, ge=0.0, description="how long to wait at start for the predictor to serve the model"
    )
    health_cache_s: float = Field(
        default=1.0, ge=0.0, description="reuse a predictor readiness answer for this long"
    )

    max_batch: int = Field(default=1000, ge=1, description="most customers accepted in one request")
    max_body_bytes: int = Field(
        default=4 << 20, ge=1024, description="largest request body accepted (413 payload_too_large above)"
    )
    max_json_depth: int = Field(
        default=32,
        ge=4,
        description="deepest JSON nesting accepted (400 json_too_deep above), checked before parsing",
    )
    max_json_values: int = Field(
        default=100_000,
        ge=1000,
        description=(
            "most JSON values (numbers, strings, keys, arrays, objects) in one body (413 json_too_many_values "
            "above), checked before parsing: it bounds the parsed size; 1,000 customers take about 40,000"
        ),
    )
    drain_timeout_s: float = Field(
        default=30.0,
        ge=0.0,
        description="on SIGTERM: how long to finish requests in flight and flush payload-log events",
    )
    # Micro-batching: while a predictor call is in flight, arriving requests queue and go together in the
    # next call (up to batch_max_rows customers); batch_wait_ms adds an optional wait to fill a call.
    batch_max_rows: int = Field(default=1000, ge=1, description="most customers in one predictor call")
    batch_wait_ms: float = Field(
        default=0.0, ge=0.0, description="extra wait to fill a predictor call (0: none; the queue fills it)"
    )
    # One call in flight per worker: requests arriving meanwhile form the next call, so calls are fewer and
    # fuller (the predictor's cost is mostly per call); measured better than 2 on a 2-core node.
    predictor_concurrency: int = Field(default=1, ge=1, description="predictor calls in flight per worker")

    # Local stand-in for KServe's payload logger (the agent sidecar): when set, every inference request
    # and its 200 response are posted to this URL as binary-mode CloudEvents, off the request path.
    payload_logger_url: str | None = Field(
        default=None, description="post payload-log CloudEvents here (local stand-in for KServe's agent)"
    )
    payload_logger_source: str = Field(
        default="http://localhost:9081/", description="ce-source of the payload-log events"
    )
    # An outage of the consumer is ridden out in the queue (posts are retried): 10,000 events hold ~50 s
    # at 100 requests/s (two events each); past that the oldest are shed (telemetry.PayloadLogger).
    payload_logger_queue: int = Field(
        default=10_000,
        ge=1,
        description="payload-log events waiting to be posted; past it the oldest are dropped",
    )
    payload_logger_max_bytes: int = Field(
        default=64 << 20,
        ge=1,
        description="payload-log event bodies waiting to be posted, in bytes; past it the oldest are dropped",
    )
    payload_logger_workers: int = Field(
        default=5, ge=1, description="payload-log events posted at once (KServe's agent: 5)"
    )
    payload_logger_retry_s: float = Field(
        default=120.0,
        ge=0.0,
        description=(
            "how long a failed payload-log post is retried (backoff from 0.2 s doubling to 2 s) before the "
            "event is dropped; while the detector is away the queue holds the events behind it"
        ),
    )
    inference_service: str = Field(default="churn", description="ce-inferenceservicename of the events")
    namespace: str = Field(default="default", description="ce-namespace of the events")
    component: str = Field(default="transformer", description="ce-component of the events")
    endpoint: str = Field(default="default", description="ce-endpoint of the events")


@lru_cache(maxsize=1)
def get_settings() -> TransformerSettings:
    return TransformerSettings()
