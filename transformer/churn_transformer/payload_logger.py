"""Local stand-in for KServe's payload logger (the agent sidecar's `logger` of an InferenceService).

In the cluster, KServe's agent proxies the component and posts each request and each 200 response to
`spec.<component>.logger.url` as CloudEvents; the drift detector consumes them. Locally there is no agent,
so when `CHURNOPS_TRANSFORMER_PAYLOAD_LOGGER_URL` is set the transformer posts the same events itself, mirroring
kserve/kserve pkg/logger (handler.go, worker.go): binary content mode; `ce-type`
`org.kubeflow.serving.inference.request` / `.response`; one `ce-id` shared by the pair (the request's
`Ce-Id` header, else a new UUID); `ce-source` (the agent's default is `http://localhost:<agent port>/`);
extensions `inferenceservicename`, `namespace`, `component`, `endpoint` and `metadata` (JSON of
forwarded headers, `{}`); the body is the raw request or response body with the *request's* Content-Type
on both events; the response event only when the status is 200. Posting is fire-and-forget: a bounded
queue drained by a background task, so a slow or absent consumer never delays an answer (events beyond
the queue are dropped and counted in the logs). Do not set it in the cluster, where the agent does this.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog

REQUEST_TYPE = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE = "org.kubeflow.serving.inference.response"

log = structlog.get_logger("churn_transformer.payload_logger")


@dataclass(frozen=True)
class EventSource:
    url: str
    source: str
    inference_service: str
    namespace: str
    component: str
    endpoint: str


class PayloadLogger:
    def __init__(self, target: EventSource, queue_size: int = 1000, timeout_s: float = 5.0) -> None:
        self.target = target
        self.queue_size = queue_size
        self.timeout_s = timeout_s
        self.dropped = 0
        self._queue: asyncio.Queue[tuple[str, str, bytes, str]] | None = None
        self._task: asyncio.Task[None] | None = None
        self._client: Any = None

    def headers(self, event_id: str, event_type: str, content_type: str) -> dict[str, str]:
        return {
            "ce-specversion": "1.0",
            "ce-id": event_id,
            "ce-type": event_type,
            "ce-source": self.target.source,
            "ce-time": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "ce-inferenceservicename": self.target.inference_service,
            "ce-namespace": self.target.namespace,
            "ce-component": self.target.component,
            "ce-endpoint": self.target.endpoint,
            "ce-metadata": "{}",
            "content-type": content_type,
        }

    @staticmethod
    def event_id(request_headers: dict[str, str]) -> str:
        return request_headers.get("ce-id") or str(uuid.uuid4())

    def submit(
        self, event_id: str, request_body: bytes, content_type: str, status: int, response_body: bytes
    ) -> None:
        """Queue the request event and, for a 200, the response event; never blocks, never raises."""
        if self._task is None or self._task.done():
            self._queue = asyncio.Queue(self.queue_size)
            self._task = asyncio.create_task(self._drain(), name="churn-payload-logger")
        assert self._queue is not None
        events = [(event_id, REQUEST_TYPE, request_body, content_type)]
        if status == 200:
            events.append((event_id, RESPONSE_TYPE, response_body, content_type))
        for event in events:
            try:
                self._queue.put_nowait(event)
            except asyncio.QueueFull:
                self.dropped += 1
                if self.dropped == 1 or self.dropped % 1000 == 0:
                    log.warning("payload logger queue full; events dropped", dropped=self.dropped)

    async def _drain(self) -> None:
        import httpx

        assert self._queue is not None
        self._client = httpx.AsyncClient(timeout=self.timeout_s)
        while True:
            event_id, event_type, body, content_type = await self._queue.get()
            try:
                response = await self._client.post(
                    self.target.url, content=body, headers=self.headers(event_id, event_type, content_type)
                )
                if response.status_code >= 300:
                    log.warning("payload logger post refused", status=response.status_code, ce_id=event_id)
            except httpx.HTTPError as error:
                log.warning("payload logger post failed", error=str(error), ce_id=event_id)
            finally:
                self._queue.task_done()

    async def flush(self, timeout_s: float = 5.0) -> None:
        """Wait until queued events are posted (tests; shutdown)."""
        if self._queue is not None:
            await asyncio.wait_for(self._queue.join(), timeout_s)
