"""`churnops feedback`: observed churn back into the prediction store (through the detector service)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from pydantic import SecretStr

    from churn_monitoring.feedback import FeedbackResult, Label

app = typer.Typer()
FEEDBACK_CHUNK = 1000


@app.command("feedback")
def feedback(
    file: Annotated[Path, typer.Option("--file", "-f", exists=True, dir_okay=False, help="labels CSV")],
    url: Annotated[str | None, typer.Option(help="detector service (CHURNOPS_DETECTOR_URL)")] = None,
    direct: Annotated[
        bool,
        typer.Option(
            "--direct", help="write to the database (CHURNOPS_DETECTOR_DATABASE_URL), not the service"
        ),
    ] = False,
) -> None:
    """Feed observed churn back: customer_id (or customerID), churned (or Churn: Yes/No), observed_at.

    By default the labels go to the running detector service, which joins them, refreshes the live-F1
    gauges at once and alerts if F1 fell; `--direct` writes to the database with the same join, for
    back-fills while no service runs (the gauges follow at the service's next refresh). In a cluster the
    service sits behind the authorizer: set CHURNOPS_DETECTOR_API_KEY to a key with the `feedback` scope
    (sent as `Authorization: Bearer`; an environment variable, not an option, so that it never shows in
    the process list or the shell history).
    """
    from churn_monitoring.feedback import FeedbackError, parse_labels, read_labels_csv
    from churn_monitoring.settings import get_settings

    settings = get_settings()
    try:
        rows = read_labels_csv(file)
        labels = parse_labels(rows) if rows else []
    except FeedbackError as error:
        for problem in error.problems[:20]:
            typer.echo(problem, err=True)
        raise typer.Exit(2) from error
    if direct:
        total = _write_directly(labels)
    else:
        total = _post(rows, (url or settings.url).rstrip("/") + "/feedback", settings.api_key)
    typer.echo(json.dumps(total.to_dict(), indent=2))


def _write_directly(labels: list[Label]) -> FeedbackResult:
    from churn_monitoring.feedback import FeedbackResult, record_labels
    from churn_monitoring.settings import get_settings
    from churn_monitoring.store.database import create_store_engine, database_url, upgrade

    settings = get_settings()
    engine = create_store_engine(database_url(settings))
    upgrade(engine)
    total = FeedbackResult()
    for start in range(0, len(labels), FEEDBACK_CHUNK):
        chunk = labels[start : start + FEEDBACK_CHUNK]
        total.merge(record_labels(engine, chunk, horizon_days=settings.feedback_horizon_days))
    engine.dispose()
    return total


def _post(rows: list[dict[str, Any]], target: str, api_key: SecretStr | None) -> FeedbackResult:
    """POST the labels in chunks; the first answer other than 200 ends the command (exit 1)."""
    import httpx

    from churn_monitoring.feedback import FeedbackResult

    headers = {"authorization": f"Bearer {api_key.get_secret_value()}"} if api_key is not None else {}
    total = FeedbackResult()
    with httpx.Client(timeout=60.0, headers=headers) as client:
        for start in range(0, len(rows), FEEDBACK_CHUNK):
            response = client.post(target, json={"labels": rows[start : start + FEEDBACK_CHUNK]})
            if response.status_code != 200:
                typer.echo(f"{target} answered {response.status_code}: {response.text[:2000]}", err=True)
                raise typer.Exit(1)
            part = response.json()
            total.merge(
                FeedbackResult(
                    received=part["received"],
                    matched=part["matched"],
                    unknown=part["unknown"],
                    outside_horizon=part["outside_horizon"],
                    unknown_customer_ids=part["unknown_customer_ids"],
                    outside_horizon_customer_ids=part["outside_horizon_customer_ids"],
                )
            )
    return total
