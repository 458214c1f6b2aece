"""The Slack drift message: impact first, and nothing from data or callers can become a link, a mention or
markup (Slack mrkdwn gives meaning to `<`, `>` and `&`; `verbatim` stops its auto-linking)."""

from __future__ import annotations

import json
import re

from churn_monitoring.alerts import drift_message, mrkdwn_escape
from churn_monitoring.drift.detector import DriftReport, FeatureDrift
from churn_monitoring.drift.impact import Impact, Outlook

HOSTILE = "<!channel> <http://evil.example|click here> & <@U123> http://evil.example"


def _feature(
    name: str, *, unseen: dict[str, int] | None = None, impact: Impact | None = None
) -> FeatureDrift:
    return FeatureDrift(
        feature=name,
        test="chi2",
        statistic=120.0,
        p_value=1e-20,
        threshold=0.01 / 19,
        effect_size=0.1,
        effect_metric="tvd",
        significant=True,
        material=True,
        drift_detected=True,
        unseen_categories=unseen or {},
        floor=0.05,
        impact=impact,
        severity="impact",
    )


def _report(version: str = "7") -> DriftReport:
    return DriftReport(
        features=[
            _feature("tenure", impact=Impact(0.002, 0.001, 0.0)),
            _feature(
                "InternetService",
                unseen={HOSTILE: 30, "a" * 500: 2},
                impact=Impact(0.031, 0.024, -0.012),
            ),
        ],
        prediction=None,
        dataset_drift=True,
        window_size=500,
        model_version=version,
        backend="scipy",
        baseline=Outlook(0.266, 0.212, 0.64),
        observed=Outlook(0.301, 0.240, 0.63),
    )


def _mrkdwn_objects(message: dict) -> list[dict]:
    found = []
    for block in message["blocks"]:
        texts = [block["text"]] if "text" in block else block.get("elements", [])
        found.extend(t for t in texts if t["type"] == "mrkdwn")
    return found


def test_message_leads_with_the_measured_and_estimated_impact():
    message = drift_message(_report(), "http://detector.example:8095/reports/drift/3", 12)

    assert (
        message["blocks"][0]["text"]["text"] == "Drift moves the churn model: predicted churn rate +3.5 pts"
    )
    assert "Measured on this window" in message["blocks"][1]["text"]["text"]
    lines = message["blocks"][2]["text"]["text"].splitlines()
    # The field with the larger impact comes first, each line starts with its impact.
    assert lines[0].startswith("• *InternetService*: predicted churn rate *+3.1 pts*")
    assert lines[1].startswith("• *tenure*: predicted churn rate *+0.2 pts*")


def test_hostile_values_cannot_link_mention_or_format():
    message = drift_message(_report(version=HOSTILE), "http://detector.example:8095/reports/drift/3", 12)
    objects = _mrkdwn_objects(message)

    assert objects
    assert all(o["verbatim"] is True for o in objects)
    for o in objects:
        assert len(o["text"]) <= 3000
        # The only `<` left anywhere is our own report link.
        assert re.findall(r"<[^>]*>", o["text"]) in (
            [],
            ["<http://detector.example:8095/reports/drift/3|Open the drift report>"],
        )
        assert "<!channel>" not in o["text"]
        assert "<@U123>" not in o["text"]
    body = message["blocks"][2]["text"]["text"]
    assert "&lt;!channel&gt; &lt;http://evil.example|click" in body
    assert "a" * 41 not in body  # caller values are bounded
    context = message["blocks"][3]["elements"][0]["text"]
    assert "&lt;!channel&gt;" in context
    # The notification text, which Slack parses itself, carries no category value and no version.
    assert "evil" not in message["text"]
    assert "channel" not in message["text"]
    assert message["unfurl_links"] is False
    assert len(message["blocks"][0]["text"]["text"]) <= 150
    json.dumps(message)


def test_report_url_cannot_break_out_of_its_link():
    message = drift_message(_report(), "http://detector.example/r|<!here>", 1)

    link = message["blocks"][-1]["text"]["text"]
    assert link == "<http://detector.example/r%7C&lt;!here&gt;|Open the drift report>"


def test_escape_is_one_bounded_line():
    assert mrkdwn_escape("a\nb\tc <x>", 80) == "a b c &lt;x&gt;"
    assert len(mrkdwn_escape("x" * 500)) == 80


def test_performance_alert_cannot_mention_or_link_from_a_forged_version():
    """The version of a performance alert comes from the store, where callers' events put it."""
    from churn_monitoring.alerts import performance_message

    message = performance_message(
        model_version=HOSTILE,
        f1=0.41,
        n=300,
        threshold=0.6,
        estimated_f1=0.5,
        link="http://d.example/performance",
    )
    objects = _mrkdwn_objects(message)
    assert objects
    assert all(o["verbatim"] is True for o in objects)
    for o in objects:
        assert re.findall(r"<[^>]*>", o["text"]) in ([], ["<http://d.example/performance|Live performance>"])
    assert "&lt;!channel&gt;" in message["blocks"][1]["text"]["text"]
    assert "evil" not in message["text"]
    assert "channel" not in message["text"]
    assert len(message["blocks"][0]["text"]["text"]) <= 150
