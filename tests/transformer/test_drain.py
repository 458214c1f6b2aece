"""SIGTERM drains: no new connections, every request in flight answered, payload events flushed, exit.

The real transformer process runs against the real predictor behind a proxy that holds each chunk of the
transformer's traffic for a moment, so requests are still in flight when SIGTERM arrives.
"""

from __future__ import annotations

import signal
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing

import httpx
import pytest

from tests.support.services import wait_until
from tests.transformer.conftest import EventSink, transformer_behind_proxy, v2_request

pytestmark = pytest.mark.integration

IN_FLIGHT = 6
HOLD_S = 2.0


def test_sigterm_answers_every_request_in_flight_then_exits(artefact_dir, predictor, customers, tmp_path):
    sink = EventSink()
    env = {
        "CHURNOPS_TRANSFORMER_PAYLOAD_LOGGER_URL": sink.url,
        "CHURNOPS_TRANSFORMER_HEALTH_CACHE_S": "600",
        "CHURNOPS_TRANSFORMER_DRAIN_TIMEOUT_S": "20",
    }
    log_file = tmp_path / "transformer.log"
    bodies = [v2_request(customers[i : i + 1]) for i in range(IN_FLIGHT)]
    # The proxy's delay_s holds each chunk towards the predictor (requests stay in flight).
    with (
        closing(sink),
        transformer_behind_proxy(artefact_dir, predictor, log_file, env=env) as (served, proxy),
    ):
        with httpx.Client(base_url=served.url, timeout=60) as http:
            assert http.post("/v2/models/churn/infer", json=bodies[0]).status_code == 200
        proxy.delay_s = HOLD_S

        clients = [httpx.Client(base_url=served.url, timeout=60) for _ in bodies]
        for http in clients:  # connections open before the requests go
            assert http.get("/v2/health/live").status_code == 200

        def call(http: httpx.Client, body: dict) -> int:
            try:
                return http.post("/v2/models/churn/infer", json=body).status_code
            finally:
                http.close()

        with ThreadPoolExecutor(IN_FLIGHT) as pool:
            answers = [pool.submit(call, http, body) for http, body in zip(clients, bodies, strict=True)]
            time.sleep(HOLD_S / 2)  # every request sent, none answered yet
            assert not any(answer.done() for answer in answers)
            started = time.monotonic()
            served.running.process.send_signal(signal.SIGTERM)
            statuses = [answer.result(timeout=60) for answer in answers]
        assert statuses == [200] * IN_FLIGHT
        served.running.process.wait(30)
        assert served.running.process.returncode == 0
        assert time.monotonic() - started < 25
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{served.url}/v2/health/live", timeout=5)
        # The payload logger flushed before exit: a request and a response event per request answered.
        wait_until(lambda: len(sink.events) >= 2 * (IN_FLIGHT + 1), 5, "every payload event")
        log = log_file.read_text(encoding="utf-8")
        assert "transformer drained" in log
        assert "Traceback" not in log
