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

from churn_core.contract import FeatureContract, telco_contract
from churn_core.jsonshape import JsonLimits
from churn_monitoring.alerts import SlackNotifier, drift_message, performance_message, webhook_url
from churn_monitoring.events import EventError
from churn_monitoring.feedback import FeedbackResult, Label, record_labels
from churn_monitoring.halves import Compactor, Half
from churn_monitoring.join import JoinOutcome, LoggedPrediction, PendingJoin
from churn_monitoring.labels import LabelValues
from churn_monitoring.metrics import DetectorMetrics
from churn_monitoring.performance import VersionPerformance, live_performance
from churn_monitoring.recent import RecentKeys
from churn_monitoring.service.intake import take_event
from churn_monitoring.service.limits import Refusal
from churn_monitoring.settings import DetectorSettings
from churn_monitoring.store.database import create_store_engine, database_url
from churn_monitoring.store.writer import PredictionWriter
from churn_monitoring.windows import Window, WindowBuffer

if TYPE_CHECKING:
    from churn_monitoring.drift.detector import DriftDetector, DriftReport

log = structlog.get_logger(__name__)

MAX_REPORTS = 50
MAX_CACHED_HTML = 5
MAX_QUEUED_WINDOWS = 20
TICK_SECONDS = 1.0
# Events up to this size are parsed on the event loop (well under a millisecond: a thread hop would cost
# more); larger ones on the intake thread, one at a time, so they never stall the loop.
INLINE_BYTES = 64 * 1024


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
        contract = self.contract or telco_contract()
        self.fields = contract.field_names
        self.compactor = Compactor(contract, settings.known_versions)
        self.labels = LabelValues(
            (contract.model.version, *settings.known_versions), (b.level for b in contract.risk_bands)
        )
        self.json_limits = JsonLimits(settings.max_json_depth, settings.max_json_values)
        self.engine = engine or create_store_engine(database_url(settings))
        self.writer = self._build_writer(settings)
        self.join = PendingJoin(
            self.fields,
            max_pending=settings.join_max_pending,
            max_bytes=settings.join_max_bytes,
            ttl_seconds=settings.join_ttl_seconds,
            recent=RecentKeys(ttl_seconds=settings.dedupe_ttl_seconds, max_keys=settings.dedupe_max_keys),
        )
        # Read when scraped (on the event loop, like every change to the join): nothing per event.
        self.metrics.pending.set_function(lambda: float(len(self.join)))
        self.metrics.pending_bytes.set_function(lambda: float(self.join.bytes))
        self.windows = WindowBuffer(
            self.fields,
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
        # One thread parses events: large events never stall the event loop, and one parse at a time
        # bounds the memory parsing needs.
        self._intake_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="intake")
        self._windows: asyncio.Queue[Window] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._last_performance = 0.0
        self.started = False

    def _build_writer(self, settings: DetectorSettings) -> PredictionWriter:
        spill_dir = settings.store_spill_dir or settings.home / "spill"
        writer = PredictionWriter(
            self.engine,
            Path(spill_dir),
            batch_rows=settings.store_batch_rows,
            flush_seconds=settings.store_flush_seconds,
            memory_rows=settings.store_memory_rows,
            memory_bytes=settings.store_memory_bytes,
            spill_max_bytes=settings.store_spill_max_bytes,
            retry_max_seconds=settings.store_retry_max_seconds,
            on_batch=self._count_written,
            on_drop=lambda reason, rows: self.metrics.store_dropped.labels(reason).inc(rows),
        )
        self.metrics.watch_store(
            lambda: float(writer.backlog),
            lambda: float(writer.spilled_rows),
            lambda: 1.0 if writer.healthy else 0.0,
        )
        self.metrics.store_queue_bytes.set_function(lambda: float(writer.memory_bytes_held))
        self.metrics.store_spill_bytes.set_function(lambda: float(writer.spill_bytes))
        self.metrics.store_spill_max_bytes.set(settings.store_spill_max_bytes)
        self.metrics.spilled_at_start.set(writer.spilled_rows)
        self.metrics.start_time.set(time.time())
        for reason in ("spill_full", "rejected_spill_full", "corrupt_spill_line"):
            self.metrics.store_dropped.labels(reason)  # every series from the start: alerts see 0 first
        return writer

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
        self._count_unpaired(self.join.drain(), "shutdown")
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self.writer.stop, 10.0)
        self._intake_executor.shutdown(wait=True, cancel_futures=True)
        self._drift_executor.shutdown(wait=True, cancel_futures=True)
        self.engine.dispose()

    # --- receiving ---

    async def receive(self, headers: Mapping[str, str], body: bytes) -> ReceiveResult:
        """Take one payload-log event; EventError or Refusal (4xx) for anything that cannot be used."""
        if len(body) <= INLINE_BYTES:
            intake = take_event(headers, body, self.compactor, self.json_limits)
        else:
            loop = asyncio.get_running_loop()
            intake = await loop.run_in_executor(
                self._intake_executor, take_event, headers, body, self.compactor, self.json_limits
            )
        if intake.error is not None or intake.half is None:
            self._count_rejected(intake.kind, intake.error)
            raise intake.error or EventError("event could not be read")
        try:
            outcome = self.join.add(intake.half, datetime.now(UTC))
        except EventError as error:
            self._count_rejected(intake.kind, error)
            raise
        return self._joined(intake.kind, outcome)

    def _joined(self, kind: str, outcome: JoinOutcome) -> ReceiveResult:
        self._count_unpaired(outcome.evicted or [], "evicted")
        self.metrics.events.labels(kind, "duplicate" if outcome.status == "duplicate" else "accepted").inc()
        if outcome.status == "joined":
            self.metrics.joins.labels("joined").inc()
            self._accept(outcome.predictions)
        return ReceiveResult(outcome.status, len(outcome.predictions))

    def _count_rejected(self, kind: str, error: EventError | Refusal | None) -> None:
        self.metrics.events.labels(kind, "rejected").inc()
        if isinstance(error, EventError) and error.code == "pair_mismatch":
            self.metrics.joins.labels("mismatch").inc()

    def _count_unpaired(self, halves: list[Half], reason: str) -> None:
        if not halves:
            return
        self.metrics.joins.labels("expired" if reason == "expired" else "evicted").inc(len(halves))
        for half in halves:
            self.metrics.unpaired.labels(half.kind, reason).inc()
        if reason != "expired":
            log.warning("payload_halves_dropped", reason=reason, halves=len(halves))

    def _accept(self, rows: list[LoggedPrediction]) -> None:
        self.writer.submit([row.to_record() for row in rows])
        for row in rows:
            self.metrics.logged.labels(
                self.labels.version(row.model_version), self.labels.risk_level(row.risk_level)
            ).inc()
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
        report when first asked for, off the event loop (matplotlib takes a second or two). Only the last
        MAX_CACHED_HTML pages are kept (a page with its plots is about a megabyte)."""
        if stored.html is None:
            loop = asyncio.get_running_loop()
            stored.html = await loop.run_in_executor(None, self._render, stored)
            cached = [report for report in self.reports.values() if report.html is not None]
            for report in cached[:-MAX_CACHED_HTML]:
                report.html = None
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
        self._count_unpaired(self.join.expire(), "expired")
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
            if self.labels.known(item.model_version):
                self._export_performance(item)
            await self._alert_performance(item)
        return performance

    def _export_performance(self, item: VersionPerformance) -> None:
        """Gauges of one version; only known versions get series (labels.py: the store may hold rows of
        any version a caller claimed, /performance lists them all)."""
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

    async def _alert_performance(self, item: VersionPerformance) -> str | None:
        realised = item.realised
        floor = self.settings.performance_f1_threshold
        if realised is None or realised.n < self.settings.performance_min_labels or realised.f1 >= floor:
            return None
        if not self.labels.known(item.model_version):
            # Versions in the store are what callers claimed: one unknown version per post would be one
            # Slack alert each. Only versions the detector serves alert (labels.py); the rest are listed
            # by /performance.
            log.warning(
                "performance_below_floor_unknown_version", versions_known=sorted(self.labels.versions)
            )
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
