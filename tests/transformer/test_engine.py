"""The micro-batcher and the payload logger in-process, against fakes: cancellation never leaves a
co-batched request pending; events are posted concurrently, retried, bounded and counted when dropped."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import numpy as np
import pytest

from churn_core.contract import Encoder
from churn_transformer import telemetry
from churn_transformer.engine import PredictorTarget, PredictorUnavailableError, Scorer
from tests.support.customers import customer_from_row


class BlockedPredictor:
    """Answers 0.5 for every row, once `release` is set; records each call's row count."""

    def __init__(self) -> None:
        self.target = PredictorTarget("fake:1", "churn", "1", 5.0)
        self.release = asyncio.Event()
        self.calls: list[int] = []

    async def predict_proba(self, rows: Any) -> Any:
        self.calls.append(len(rows))
        await self.release.wait()
        return np.full(len(rows), 0.5)

    async def ready(self) -> bool:
        return True

    async def close(self) -> None:
        return None


@pytest.fixture(scope="module")
def batch(trained_model, telco_rows):
    records = [
        {k: v for k, v in customer_from_row(row).items() if k != "customerID"} for row in telco_rows[:1]
    ]
    return Encoder(trained_model.contract).batch_from_records(records)


def _scorer(contract: Any, client: BlockedPredictor) -> Scorer:
    return Scorer(contract, client, max_rows=1000, wait_s=0.0, concurrency=1)  # type: ignore[arg-type]


async def _settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def test_a_cancelled_request_leaves_its_co_batched_requests_answered(trained_model, batch):
    async def run() -> None:
        client = BlockedPredictor()
        scorer = _scorer(trained_model.contract, client)
        first = asyncio.create_task(scorer.score(batch))  # goes alone; the call blocks
        await _settle()
        queued = [asyncio.create_task(scorer.score(batch)) for _ in range(3)]  # the next call, together
        await _settle()
        queued[1].cancel()  # its client went away while it waited
        client.release.set()
        assert len((await first).probabilities) == 1
        assert len((await queued[0]).probabilities) == 1
        assert len((await queued[2]).probabilities) == 1
        with pytest.raises(asyncio.CancelledError):
            await queued[1]
        assert client.calls == [1, 2]
        await scorer.close()

    asyncio.run(run())


def test_a_cancelled_predictor_call_answers_every_request_in_it(trained_model, batch):
    async def run() -> None:
        client = BlockedPredictor()
        scorer = _scorer(trained_model.contract, client)
        first = asyncio.create_task(scorer.score(batch))
        await _settle()
        together = [asyncio.create_task(scorer.score(batch)) for _ in range(2)]
        await _settle()
        for call in list(scorer._calls):
            call.cancel()
        await _settle()
        with pytest.raises(PredictorUnavailableError):
            await first
        # The next call carries the two others; cancel it mid-flight too.
        await _settle()
        assert client.calls == [1, 2]
        for call in list(scorer._calls):
            call.cancel()
        results = await asyncio.wait_for(asyncio.gather(*together, return_exceptions=True), 5)
        assert all(isinstance(r, PredictorUnavailableError) for r in results), results
        client.release.set()  # and the scorer still serves
        assert len((await asyncio.wait_for(scorer.score(batch), 5)).probabilities) == 1
        await scorer.close()

    asyncio.run(run())


def test_queued_requests_get_an_error_when_the_scorer_closes(trained_model, batch):
    async def run() -> None:
        client = BlockedPredictor()
        client.target = PredictorTarget("fake:1", "churn", "1", 0.2)
        scorer = _scorer(trained_model.contract, client)
        tasks = [asyncio.create_task(scorer.score(batch)) for _ in range(3)]
        await _settle()
        closing = asyncio.create_task(scorer.close())
        results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 5)
        await closing
        assert all(isinstance(r, BaseException) for r in results[1:]), results

    asyncio.run(run())


# ---- payload logger ----------------------------------------------------------------------------------------


def _logger(handler: Any, **options: Any) -> telemetry.PayloadLogger:
    source = telemetry.EventSource(
        "http://sink/", "http://localhost:9081/", "churn", "default", "t", "default"
    )
    options = {"backoff_s": 0.01, "max_backoff_s": 0.02, **options}
    return telemetry.PayloadLogger(source, transport=httpx.MockTransport(handler), **options)


def test_payload_logger_posts_concurrently_and_retries_a_restarting_consumer(trained_model):
    telemetry.start_metrics(trained_model.version)
    seen: list[str] = []
    failures = {"left": 3}
    in_flight = {"now": 0, "most": 0}

    async def run() -> None:
        async def handler(request: httpx.Request) -> httpx.Response:
            in_flight["now"] += 1
            in_flight["most"] = max(in_flight["most"], in_flight["now"])
            await asyncio.sleep(0.01)
            in_flight["now"] -= 1
            if failures["left"] > 0:
                failures["left"] -= 1
                return httpx.Response(503)
            seen.append(request.headers["ce-id"])
            return httpx.Response(200)

        events = _logger(handler, workers=5)
        for _ in range(20):
            events.submit(str(uuid.uuid4()), b'{"instances": []}', "application/json", 200, b"{}")
        assert await events.flush(10)
        await events.close(1)
        assert len(seen) == 40  # every event, the three refused posts retried
        assert len(set(seen)) == 20  # one id per request/response pair
        assert in_flight["most"] > 1
        assert events.dropped == 0

    asyncio.run(run())


def test_payload_logger_drops_after_bounded_retries_and_bounds_its_queue_in_bytes(trained_model):
    telemetry.start_metrics(trained_model.version)

    async def run() -> None:
        attempts = {"n": 0}

        def down(request: httpx.Request) -> httpx.Response:
            attempts["n"] += 1
            raise httpx.ConnectError("refused", request=request)

        events = _logger(down, workers=2, retry_s=0.05)  # backoff 0.01, 0.02, 0.02, ... (max_backoff_s)
        events.submit("one", b"x", "application/json", 400, b"")
        assert await events.flush(10)
        assert attempts["n"] >= 3  # retried until retry_s ran out, then dropped: not held forever
        assert events.dropped_by_reason == {"post_failed": 1}
        await events.close(1)

        blocked = asyncio.Event()

        async def stuck(request: httpx.Request) -> httpx.Response:
            await blocked.wait()
            return httpx.Response(200)

        small = _logger(stuck, workers=1, max_bytes=1000)
        for _ in range(5):
            small.submit(str(uuid.uuid4()), b"y" * 400, "application/json", 200, b"z" * 10)
        assert small.queued_bytes <= 1000
        assert small.dropped > 0
        blocked.set()
        await small.close(5)

    asyncio.run(run())


def test_payload_logger_sheds_its_oldest_events_when_full_and_delivers_the_newest(trained_model):
    telemetry.start_metrics(trained_model.version)

    async def run() -> None:
        release = asyncio.Event()
        seen: list[str] = []

        async def slow(request: httpx.Request) -> httpx.Response:
            await release.wait()
            seen.append(request.headers["ce-id"])
            return httpx.Response(200)

        events = _logger(slow, workers=1, max_events=4)
        ids = [f"e{n}" for n in range(10)]
        events.submit(ids[0], b"{}", "application/json", 400, b"")
        await asyncio.sleep(0.01)  # the one poster takes e0 and waits on the consumer
        for event_id in ids[1:]:
            events.submit(event_id, b"{}", "application/json", 400, b"")
        assert events.dropped_by_reason == {"queue_full": 5}
        release.set()
        assert await events.flush(5)
        await events.close(1)
        assert seen == [ids[0], *ids[6:]]  # the oldest queued (e1-e5) shed, every newer one delivered
        assert events.queued_bytes == 0

    asyncio.run(run())


def test_payload_logger_rides_out_a_consumer_outage_without_losing_an_event(trained_model):
    telemetry.start_metrics(trained_model.version)

    async def run() -> None:
        back_at = asyncio.get_running_loop().time() + 0.5  # ~25 failed attempts per poster at 0.02 s
        seen: list[str] = []

        async def restarting(request: httpx.Request) -> httpx.Response:
            if asyncio.get_running_loop().time() < back_at:
                raise httpx.ConnectError("refused", request=request)
            seen.append(request.headers["ce-id"])
            return httpx.Response(200)

        events = _logger(restarting, workers=2, retry_s=5.0)
        ids = [str(uuid.uuid4()) for _ in range(30)]
        for event_id in ids:
            events.submit(event_id, b"{}", "application/json", 400, b"")
            await asyncio.sleep(0.01)
        assert await events.flush(10)
        await events.close(1)
        assert events.dropped == 0
        assert sorted(seen) == sorted(ids)  # delayed, every one delivered once

    asyncio.run(run())
