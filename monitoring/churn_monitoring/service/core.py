"""The detector service's state and work, apart from HTTP: receive events, join, store, window, test,
alert, and keep the live-performance gauges fresh.

Everything on the receive path is in-memory and non-blocking (parse, join, queue); database writes go to
the writer thread, drift tests to a one-thread executor (a test takes milliseconds to a second and must
not stall the event loop; one thread keeps windows in order), performance queries and feedback to the
default executor.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import Engine

from churn_core.contract import TELCO_FIELDS, FeatureContract
from churn_monitoring.alerts import SlackNotifier, drift_message, performance_message, webhook_url
from churn_monitoring.events import EventError, PayloadEvent, parse_event, parse_request, parse_response
from churn_monitoring.feedback import FeedbackResult, Label, record_labels
from churn_monitoring.join import Half, LoggedPrediction, PendingJoin
from churn_monitoring.metrics import DetectorMetrics
from churn_monitoring.performance import VersionPerformance, live_performance
from churn_monitoring.settings import DetectorSettings
from churn_monitoring.store.database import create_store_engine, database_url
from churn_monitoring.store.writer import PredictionWriter
from churn_monitoring.windows import Window, WindowBuffer

if TYPE_CHECKING:
    from churn_monitoring.drift.detector import DriftDetector, DriftReport

log = structlog.get_logger(__name__)

MAX_REPORTS = 50
MAX_QUEUED_WINDOWS = 20
TICK_SECONDS = 1.0


@dataclass
class StoredReport:
    id: int
    window: Window
    created_at: datetime
    report: DriftReport
    html: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "window": self.window.number,
            "created_at": self.created_at.isoformat(),
            **self.report.to_dict(),
        }


@dataclass
class ReceiveResult:
    status: str
    rows: int = 0
    detail: dict[str, Any] = field(default_factory=dict)


class DetectorService:
    """One instance per process (the FastAPI lifespan owns it)."""

    def __init__(
        self,
        settings: DetectorSettings,
        *,
        engine: Engine | None = None,
        detector: DriftDetector | None = None,
        load_detector: bool = True,
    ) -> None:
        self.settings = settings
        self.metrics = DetectorMetrics()
        self.contract: FeatureContract | None = None
        if settings.model_dir is not None:
            self.contract = FeatureContract.load(settings.model_dir)
        fields = self.contract.field_names if self.contract else tuple(f.name for f in TELCO_FIELDS)
        self.fields = fields
        self.engine = engine or create_store_engine(database_url(settings))
        spill_dir = settings.store_spill_dir or settings.home / "spill"
        self.writer = PredictionWriter(
            self.engine,
            Path(spill_dir),
            batch_rows=settings.store_batch_rows,
            flush_seconds=settings.store_flush_seconds,
            memory_rows=settings.store_memory_rows,
            retry_max_seconds=settings.store_retry_max_seconds,
            on_batch=self._count_written,
        )
        self.metrics.watch_store(
            lambda: float(self.writer.backlog),
            lambda: float(self.writer.spilled_rows),
            lambda: 1.0 if self.writer.healthy else 0.0,
        )
        self.join = PendingJoin(
            fields, max_pending=settings.join_max_pending, ttl_seconds=settings.join_ttl_seconds
        )
        self.windows = WindowBuffer(
            fields,
            size=settings.window_size,
            min_size=settings.window_min_size,
            max_age_seconds=settings.window_max_age_seconds,
        )
        self.detector = detector
        self._load_detector = load_detector and detector is None and settings.model_dir is not None
        self.detector_error: str | None = None
        self.notifier = SlackNotifier(
            lambda: webhook_url(settings),
            cooldown_seconds=settings.alert_cooldown_seconds,
            on_outcome=lambda kind, outcome: self.metrics.alerts.labels(kind, outcome).inc(),
        )
        self.reports: OrderedDict[int, StoredReport] = OrderedDict()
        self._report_ids = 0
        self.performance: list[VersionPerformance] = []
        self.performance_at: datetime | None = None
        self._drift_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="drift")
        self._windows: asyncio.Queue[Window] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._last_performance = 0.0
        self.started = False

    # --- lifecycle ---

    async def start(self) -> None:
        self.writer.start()
        self._windows = asyncio.Queue(MAX_QUEUED_WINDOWS)
        if self._load_detector:
            await self._build_detector()
        self._tasks = [
            asyncio.create_task(self._drift_loop(), name="drift-windows"),
            asyncio.create_task(self._tick_loop(), name="detector-tick"),
        ]
        self.started = True

    async def _build_detector(self) -> None:
        from churn_monitoring.drift.detector import DriftDetector, options_from_settings

        model_dir = self.settings.model_dir
        assert model_dir is not None
        options = options_from_settings(self.settings)
        loop = asyncio.get_running_loop()
        try:
            self.detector = await loop.run_in_executor(
                self._drift_executor, lambda: DriftDetector.from_artefact(model_dir, **options)
            )
            log.info(
                "drift_detector_ready",
                backend=self.settings.drift_backend,
                model_dir=str(self.settings.model_dir),
            )
        except Exception as error:
            # Without a detector the service still stores predictions and labels; readiness says why.
            self.detector_error = f"{type(error).__name__}: {error}"
            log.exception("drift_detector_failed")

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self.writer.stop, 10.0)
        self._drift_executor.shutdown(wait=True, cancel_futures=True)
        self.engine.dispose()

    # --- receiving ---

    async def receive(self, headers: Mapping[str, str], body: bytes) -> ReceiveResult:
        """Take one payload-log event; EventError (4xx) for anything that cannot be used."""
        kind = "unknown"
        try:
            event = parse_event(headers, body)
            kind = event.kind
            half = self._parse_half(event)
            outcome = self.join.add(half, datetime.now(UTC))
        except EventError as error:
            self.metrics.events.labels(kind, "rejected").inc()
            if error.status == 422:
                self.metrics.joins.labels("mismatch").inc()
            raise
        finally:
            self.metrics.pending.set(len(self.join))
        if outcome.evicted:
            self.metrics.joins.labels("evicted").inc(outcome.evicted)
        self.metrics.events.labels(kind, "duplicate" if outcome.status == "duplicate" else "accepted").inc()
        if outcome.status == "joined":
            self.metrics.joins.labels("joined").inc()
            self._accept(outcome.predictions)
        return ReceiveResult(outcome.status, len(outcome.predictions))

    def _parse_half(self, event: PayloadEvent) -> Half:
        try:
            if event.kind == "request":
                return Half(event, customers=parse_request(event))
            return Half(event, answers=parse_response(event))
        except EventError:
            raise
        except (TypeError, ValueError, KeyError, AttributeError, OverflowError) as error:
            # A payload shaped in a way the parser did not foresee is still the sender's problem: 4xx.
            raise EventError(
                f"{event.kind} payload could not be read: {type(error).__name__}: {error}"
            ) from error

    def _accept(self, rows: list[LoggedPrediction]) -> None:
        self.writer.submit([row.to_record() for row in rows])
        for row in rows:
            self.metrics.logged.labels(row.model_version, row.risk_level or "unknown").inc()
        for window in self.windows.add(rows):
            self._queue_window(window)
        self.metrics.window_buffer.set(len(self.windows))

    def _count_written(self, inserted: int, duplicates: int) -> None:
        if inserted:
            self.metrics.store_rows.labels("inserted").inc(inserted)
        if duplicates:
            self.metrics.store_rows.labels("duplicate").inc(duplicates)

    # --- drift ---

    def _queue_window(self, window: Window) -> None:
        assert self._windows is not None
        if self._windows.full():
            self._windows.get_nowait()
            self.metrics.windows.labels("dropped").inc()
            log.warning("drift_window_dropped", reason="drift tests fall behind")
        self._windows.put_nowait(window)

    async def _drift_loop(self) -> None:
        assert self._windows is not None
        while True:
            window = await self._windows.get()
            try:
                await self.test_window(window)
            except Exception:
                self.metrics.windows.labels("error").inc()
                log.exception("drift_test_failed", window=window.number, size=len(window))

    async def test_window(self, window: Window) -> StoredReport | None:
        if self.detector is None:
            self.metrics.windows.labels("skipped").inc()
            return None
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        report = await loop.run_in_executor(
            self._drift_executor, self.detector.test, window.columns, window.probabilities
        )
        self.metrics.drift_duration.observe(time.perf_counter() - started)
        stored = self._keep_report(window, report)
        self._export_drift(report)
        drifted = bool(report.dataset_drift) or bool(
            report.prediction is not None and report.prediction.drift_detected
        )
        self.metrics.windows.labels("drift" if drifted else "no_drift").inc()
        log.info(
            "drift_window_tested",
            window=window.number,
            size=report.window_size,
            drift=drifted,
            drifted=[f.feature for f in report.drifted()],
            severity=report.severity,
            report=stored.id,
        )
        # Page (Slack) only on a drift that moves the model's output; a harmless one is logged and exported.
        if report.severity == "impact":
            await self._alert_drift(stored)
        elif drifted:
            log.info("drift_below_impact_threshold", window=window.number, report=stored.id)
        return stored

    def _keep_report(self, window: Window, report: DriftReport) -> StoredReport:
        self._report_ids += 1
        stored = StoredReport(self._report_ids, window, datetime.now(UTC), report)
        self.reports[stored.id] = stored
        while len(self.reports) > MAX_REPORTS:
            self.reports.popitem(last=False)
        return stored

    def _export_drift(self, report: DriftReport) -> None:
        self.metrics.export_drift(report)

    def report_url(self, report_id: int) -> str:
        return f"{self.settings.url.rstrip('/')}/reports/drift/{report_id}"

    async def report_html(self, stored: StoredReport) -> str:
        """The drift engineer's HTML report (with plots of reference against window), rendered once per
        report when first asked for, off the event loop (matplotlib takes a second or two)."""
        if stored.html is None:
            loop = asyncio.get_running_loop()
            stored.html = await loop.run_in_executor(None, self._render, stored)
        return stored.html

    def _render(self, stored: StoredReport) -> str:
        from churn_monitoring.drift.report import render_html

        assert self.detector is not None
        samples = self.detector.samples(stored.window.columns, stored.window.probabilities)
        title = (
            f"Drift report {stored.id}: window #{stored.window.number}, model {stored.report.model_version}"
        )
        return render_html(stored.report, samples, title=title)

    async def _alert_drift(self, stored: StoredReport) -> str:
        report = stored.report
        subjects = [f.feature for f in report.drifted()]
        if report.prediction is not None and report.prediction.drift_detected:
            subjects.append(report.prediction.feature)
        message = drift_message(report, self.report_url(stored.id), stored.window.number)
        return await self.notifier.send("drift", str(report.model_version), message, subjects)

    # --- periodic work ---

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(TICK_SECONDS)
            try:
                await self.tick()
            except Exception:
                log.exception("detector_tick_failed")

    async def tick(self) -> None:
        expired = self.join.expire()
        if expired:
            self.metrics.joins.labels("expired").inc(len(expired))
        self.metrics.pending.set(len(self.join))
        window = self.windows.due()
        if window is not None:
            self._queue_window(window)
        self.metrics.window_buffer.set(len(self.windows))
        if time.monotonic() - self._last_performance >= self.settings.performance_interval_seconds:
            self._last_performance = time.monotonic()
            with contextlib.suppress(Exception):
                await self.refresh_performance()

    async def refresh_performance(self) -> list[VersionPerformance]:
        """Recompute live performance, export it, alert on a low F1; raises when the store is down."""
        loop = asyncio.get_running_loop()
        try:
            performance = await loop.run_in_executor(
                None,
                lambda: live_performance(self.engine, window_days=self.settings.performance_window_days),
            )
        except Exception as error:
            log.warning("performance_unavailable", error=type(error).__name__)
            raise
        self.performance = performance
        self.performance_at = datetime.now(UTC)
        for item in performance:
            version = item.model_version
            if item.realised is not None:
                self.metrics.f1.labels(version).set(item.realised.f1)
                self.metrics.precision.labels(version).set(item.realised.precision)
                self.metrics.recall.labels(version).set(item.realised.recall)
                if item.realised.roc_auc is not None:
                    self.metrics.roc_auc.labels(version).set(item.realised.roc_auc)
                self.metrics.labelled.labels(version).set(item.realised.n)
            if item.estimated is not None:
                if item.estimated.f1 is not None:
                    self.metrics.estimated_f1.labels(version).set(item.estimated.f1)
                self.metrics.window_predictions.labels(version).set(item.estimated.n)
            await self._alert_performance(item)
        return performance

    async def _alert_performance(self, item: VersionPerformance) -> str | None:
        realised = item.realised
        floor = self.settings.performance_f1_threshold
        if realised is None or realised.n < self.settings.performance_min_labels or realised.f1 >= floor:
            return None
        estimated = item.estimated.f1 if item.estimated is not None else None
        link = f"{self.settings.url.rstrip('/')}/performance"
        message = performance_message(
            model_version=item.model_version,
            f1=realised.f1,
            n=realised.n,
            threshold=floor,
            estimated_f1=estimated,
            link=link,
        )
        return await self.notifier.send("performance", item.model_version, message)

    # --- feedback ---

    async def feedback(self, labels: list[Label]) -> FeedbackResult:
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(
            None,
            lambda: record_labels(self.engine, labels, horizon_days=self.settings.feedback_horizon_days),
        )
        self.metrics.feedback.labels("matched").inc(result.matched)
        self.metrics.feedback.labels("unknown_customer").inc(result.unknown)
        self.metrics.feedback.labels("outside_horizon").inc(result.outside_horizon)
        if result.matched:
            with contextlib.suppress(Exception):
                await self.refresh_performance()
        return result
