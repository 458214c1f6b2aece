"""Slack alerts: drift and live-performance messages for an incoming webhook, sent at most once per
cooldown for the same thing.

The webhook URL is a secret (anyone holding it can post to the channel): it comes from a `SecretStr`
setting or a mounted Secret file, is read when a message is sent (so a rotated Secret is picked up), and is
never logged nor put into an exception message (httpx's errors quote the URL, so they are not re-raised).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
import structlog

from churn_monitoring.settings import DetectorSettings

if TYPE_CHECKING:
    from churn_monitoring.drift.detector import DriftReport

log = structlog.get_logger(__name__)

MAX_FEATURE_LINES = 10


def webhook_url(settings: DetectorSettings) -> str | None:
    """The file (a mounted Secret) wins over the variable; None when neither is set."""
    if settings.slack_webhook_url_file is not None:
        try:
            text = settings.slack_webhook_url_file.read_text(encoding="utf-8").strip()
        except OSError:
            log.error("slack_webhook_file_unreadable", path=str(settings.slack_webhook_url_file))
            return None
        return text or None
    if settings.slack_webhook_url is not None:
        return settings.slack_webhook_url.get_secret_value() or None
    return None


@dataclass
class _Sent:
    at: float
    subjects: frozenset[str]


class SlackNotifier:
    """Posts messages to the webhook; the same (kind, scope) is suppressed during the cooldown unless it
    names something (a feature) the last message did not."""

    def __init__(
        self,
        url: Callable[[], str | None],
        *,
        cooldown_seconds: float,
        on_outcome: Callable[[str, str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        timeout: float = 5.0,
    ) -> None:
        self._url = url
        self.cooldown = cooldown_seconds
        self._on_outcome = on_outcome
        self._clock = clock
        self._timeout = timeout
        self._sent: dict[tuple[str, str], _Sent] = {}

    def _record(self, kind: str, outcome: str) -> str:
        if self._on_outcome is not None:
            self._on_outcome(kind, outcome)
        return outcome

    def suppressed(self, kind: str, scope: str, subjects: Iterable[str] = ()) -> bool:
        last = self._sent.get((kind, scope))
        if last is None or self._clock() - last.at >= self.cooldown:
            return False
        return frozenset(subjects) <= last.subjects

    async def send(self, kind: str, scope: str, message: dict[str, Any], subjects: Iterable[str] = ()) -> str:
        """Post one message; returns "sent", "suppressed", "failed" or "disabled" (no webhook configured)."""
        subject_set = frozenset(subjects)
        if self.suppressed(kind, scope, subject_set):
            return self._record(kind, "suppressed")
        url = self._url()
        if url is None:
            return self._record(kind, "disabled")
        try:
            async with httpx.AsyncClient(timeout=self._timeout) as client:
                response = await client.post(url, json=message)
        except httpx.HTTPError as error:
            log.error("slack_post_failed", kind=kind, error=type(error).__name__)
            return self._record(kind, "failed")
        if response.status_code != 200:
            log.error("slack_post_refused", kind=kind, status=response.status_code, body=response.text[:200])
            return self._record(kind, "failed")
        self._sent[(kind, scope)] = _Sent(self._clock(), subject_set)
        log.info("slack_alert_sent", kind=kind, scope=scope)
        return self._record(kind, "sent")


def _format_p(value: float) -> str:
    return f"{value:.2e}" if value < 1e-3 else f"{value:.4f}"


def drift_message(report: DriftReport, report_url: str, window_number: int) -> dict[str, Any]:
    """Incoming-webhook payload for a drifted window: which features, how strongly, where to read more."""
    drifted = list(report.drifted())
    lines = [
        f"• *{feature.feature}* — {feature.test} statistic {feature.statistic:.4g}, "
        f"p-value {_format_p(feature.p_value)} (threshold {_format_p(feature.threshold)}), "
        f"{feature.effect_metric} {feature.effect_size:.3f}"
        for feature in drifted[:MAX_FEATURE_LINES]
    ]
    if len(drifted) > MAX_FEATURE_LINES:
        lines.append(f"• … and {len(drifted) - MAX_FEATURE_LINES} more")
    prediction = report.prediction
    if prediction is not None and prediction.drift_detected:
        lines.append(
            f"• *predicted churn probability* — {prediction.test} statistic {prediction.statistic:.4g}, "
            f"p-value {_format_p(prediction.p_value)}, {prediction.effect_metric} {prediction.effect_size:.3f}"
        )
    names = ", ".join(f.feature for f in drifted) or "predictions"
    title = f"Data drift in churn model {report.model_version}: {names}"
    context = (
        f"window #{window_number} of {report.window_size} customers · "
        f"model version {report.model_version} · backend {report.backend}"
    )
    return {
        "text": f"{title} (window of {report.window_size} customers). Report: {report_url}",
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": title[:150]}},
            {"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines) or "prediction drift"}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": context}]},
            {"type": "section", "text": {"type": "mrkdwn", "text": f"<{report_url}|Open the drift report>"}},
        ],
    }


def performance_message(
    *, model_version: str, f1: float, n: int, threshold: float, estimated_f1: float | None, link: str
) -> dict[str, Any]:
    """Incoming-webhook payload for a live F1 below the floor."""
    estimated = f"{estimated_f1:.3f}" if estimated_f1 is not None else "n/a"
    title = f"Churn model {model_version}: live F1 {f1:.3f} below {threshold:.2f}"
    body = (
        f"Realised F1 *{f1:.3f}* over *{n}* labelled predictions (floor {threshold:.2f}); "
        f"estimated F1 from calibrated probabilities (CBPE) {estimated}."
    )
    return {
        "text": f"{title} (n={n}). Details: {link}",
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": title[:150]}},
            {"type": "section", "text": {"type": "mrkdwn", "text": body}},
            {"type": "section", "text": {"type": "mrkdwn", "text": f"<{link}|Live performance>"}},
        ],
    }
