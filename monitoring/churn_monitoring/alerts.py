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
    from churn_monitoring.drift.detector import DriftReport, FeatureDrift
    from churn_monitoring.drift.impact import Impact

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


# What Slack's mrkdwn gives meaning to: `<...>` opens links, mentions (<!channel>, <@U…>) and dates, and `&`
# starts an escape; Slack's formatting reference asks for exactly these three to be escaped.
_MRKDWN_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})
# Field names, category values and versions come from the artefact and from callers: bounded, one line.
MAX_VALUE_CHARS = 80
# Slack refuses a section text over 3,000 characters and a header over 150.
MAX_SECTION_CHARS = 3000
MAX_HEADER_CHARS = 150


def _one_line(value: object, limit: int = MAX_VALUE_CHARS) -> str:
    text = " ".join(str(value).split())  # newlines and control whitespace cannot start a new block line
    text = "".join(c for c in text if c.isprintable())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def mrkdwn_escape(value: object, limit: int = MAX_VALUE_CHARS) -> str:
    """Text from data or callers made inert in mrkdwn: `&`, `<`, `>` escaped (no link, mention or date
    syntax can survive), on one bounded line. Messages also set `verbatim` so that Slack does not turn bare
    URLs, #channels or @names in the text into links or mentions by itself."""
    return _one_line(value, limit).translate(_MRKDWN_ESCAPES)


def _mrkdwn(text: str) -> dict[str, Any]:
    if len(text) > MAX_SECTION_CHARS:
        text = text[: MAX_SECTION_CHARS - 1] + "…"
    return {"type": "mrkdwn", "text": text, "verbatim": True}


def _pts(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:+.1f} pts"


def _impact_line(impact: Impact | None) -> str:
    if impact is None:
        return "impact unknown"
    f1 = "n/a" if impact.estimated_f1 is None else f"{impact.estimated_f1:+.3f}"
    return (
        f"predicted churn rate *{_pts(impact.churn_rate)}*, High/Very High *{_pts(impact.high_risk_share)}*, "
        f"estimated F1 {f1}"
    )


def _feature_line(feature: FeatureDrift) -> str:
    unseen = ""
    if feature.unseen_categories:
        shown = list(feature.unseen_categories.items())[:3]
        unseen = "; unseen: " + ", ".join(f"{mrkdwn_escape(k, 40)} ×{v}" for k, v in shown)
    return (
        f"• *{mrkdwn_escape(feature.feature)}*: {_impact_line(feature.impact)} "
        f"({feature.test} statistic {feature.statistic:.4g}, p-value {_format_p(feature.p_value)}, "
        f"{feature.effect_metric} {feature.effect_size:.3f}"
        f"{unseen})"
    )


def _drift_title(report: DriftReport) -> str:
    observed = report.observed_impact
    lead = report.drifted()[0].impact if report.drifted() else None
    impact = observed if observed is not None else lead
    change = f"predicted churn rate {_pts(impact.churn_rate)}" if impact is not None else "impact unknown"
    kind = "Drift moves the churn model" if report.severity == "impact" else "Harmless drift"
    return f"{kind}: {change}"


def drift_message(report: DriftReport, report_url: str, window_number: int) -> dict[str, Any]:
    """Incoming-webhook payload for a drifted window, leading with what the drift does to the model's output
    (measured on the window when it was scored, estimated per field), then the statistics.

    Everything that comes from data, callers or configuration (field names, unseen category values, the
    model version, the report URL) is escaped and every mrkdwn object is `verbatim`. The notification
    `text`, which Slack parses on its own, holds only our words and numbers, the contract's field names and
    the configured report URL: never a category value or a version.
    """
    drifted = report.drifted()
    lines = [_feature_line(feature) for feature in drifted[:MAX_FEATURE_LINES]]
    if len(drifted) > MAX_FEATURE_LINES:
        lines.append(f"• … and {len(drifted) - MAX_FEATURE_LINES} more")
    prediction = report.prediction
    if prediction is not None and prediction.drift_detected:
        lines.append(
            f"• *predicted churn probability* (measured): {_impact_line(prediction.impact)} "
            f"({prediction.test} p-value {_format_p(prediction.p_value)})"
        )
    observed = report.observed_impact
    summary = (
        f"*Measured on this window:* {_impact_line(observed)}"
        if observed is not None
        else "*Estimated per drifted field* (the window came without predictions)"
    )
    title = _drift_title(report)
    context = (
        f"window #{window_number} of {report.window_size} customers · model version "
        f"{mrkdwn_escape(report.model_version, 40)} · backend {report.backend} · severity {report.severity}"
    )
    url = mrkdwn_escape(report_url, 500).replace("|", "%7C")
    names = ", ".join(mrkdwn_escape(f.feature) for f in drifted[:MAX_FEATURE_LINES]) or "predictions"
    return {
        "text": f"{title} ({names}; window #{window_number} of {report.window_size} customers). Report: {url}",
        "unfurl_links": False,
        "unfurl_media": False,
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": _one_line(title, MAX_HEADER_CHARS)}},
            {"type": "section", "text": _mrkdwn(summary)},
            {"type": "section", "text": _mrkdwn("\n".join(lines) or "prediction drift")},
            {"type": "context", "elements": [_mrkdwn(context)]},
            {"type": "section", "text": _mrkdwn(f"<{url}|Open the drift report>")},
        ],
    }


def performance_message(
    *, model_version: str, f1: float, n: int, threshold: float, estimated_f1: float | None, link: str
) -> dict[str, Any]:
    """Incoming-webhook payload for a live F1 below the floor.

    The version comes from the prediction store, where callers' events put it: escaped in the mrkdwn,
    one bounded line in the header, and left out of the notification `text` that Slack parses on its own
    (as drift_message does)."""
    estimated = f"{estimated_f1:.3f}" if estimated_f1 is not None else "n/a"
    title = f"Churn model {_one_line(model_version, 40)}: live F1 {f1:.3f} below {threshold:.2f}"
    body = (
        f"Model version {mrkdwn_escape(model_version, 40)}: realised F1 *{f1:.3f}* over *{n}* labelled "
        f"predictions (floor {threshold:.2f}); estimated F1 from calibrated probabilities (CBPE) {estimated}."
    )
    url = mrkdwn_escape(link, 500).replace("|", "%7C")
    return {
        "text": f"Churn model live F1 {f1:.3f} below {threshold:.2f} (n={n}). Details: {url}",
        "unfurl_links": False,
        "unfurl_media": False,
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": _one_line(title, MAX_HEADER_CHARS)}},
            {"type": "section", "text": _mrkdwn(body)},
            {"type": "section", "text": _mrkdwn(f"<{url}|Live performance>")},
        ],
    }
