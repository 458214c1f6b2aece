"""Shadow evaluation before any traffic: both versions score the customers whose outcome came back.

The prediction store (the detector's `churn_predictions`, joined to `churn_labels`) holds what live
customers looked like when they were scored and, for some, whether they churned. `churnops evaluate
VERSION --against champion` scores those customers with both versions' artefacts, offline, and compares
ROC AUC, F1 at each version's own threshold, calibration (Brier score, expected calibration error) and the
share of customers whose risk level would change. The comparison is kept on the version in the registry;
the automated canary refuses a version that loses it beyond the overlay's margins unless forced.

Each customer counts once, with its latest labelled prediction; rows a version's contract cannot read
(a field it does not know) are left out for both, and counted. The read is bounded (`max_customers`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from churnops.cluster.canary.config import ShadowLimits

if TYPE_CHECKING:
    from churn_model.registry import Registry

ShadowVerdict = Literal["holds", "loses", "insufficient"]
COMPARED = ("roc_auc", "f1", "precision", "recall", "brier", "calibration_error", "threshold")


@dataclass(frozen=True)
class LabelledCustomer:
    customer_id: str
    features: Mapping[str, Any]
    churned: bool


@dataclass
class ShadowComparison:
    version: str
    against: str
    customers: int
    left_out: int
    challenger: dict[str, float] = field(default_factory=dict)
    champion: dict[str, float] = field(default_factory=dict)
    risk_level_changed: float = math.nan
    evaluated_at: float = field(default_factory=time.time)

    def as_record(self) -> dict[str, object]:
        return asdict(self)


def shadow_verdict(record: Mapping[str, Any], limits: ShadowLimits) -> tuple[ShadowVerdict, list[str]]:
    """Whether the version holds up against the champion, with the reasons it does not."""
    if int(record.get("customers", 0)) < limits.min_labelled:
        return "insufficient", [
            f"{record.get('customers', 0)} labelled customers (needs {limits.min_labelled})"
        ]
    new, old = record["challenger"], record["champion"]
    reasons = []
    if new["roc_auc"] < old["roc_auc"] - limits.max_auc_drop:
        reasons.append(
            f"ROC AUC {new['roc_auc']:.4f} vs {old['roc_auc']:.4f} (margin {limits.max_auc_drop:g})"
        )
    if new["f1"] < old["f1"] - limits.max_f1_drop:
        reasons.append(f"F1 {new['f1']:.4f} vs {old['f1']:.4f} (margin {limits.max_f1_drop:g})")
    return ("loses" if reasons else "holds"), reasons


def labelled_customers(database_url: str, max_customers: int) -> list[LabelledCustomer]:
    """The latest labelled prediction of each customer, newest first, at most `max_customers`."""
    from sqlalchemy import select

    from churn_monitoring.store.database import create_store_engine
    from churn_monitoring.store.schema import labels, predictions

    engine = create_store_engine(database_url)
    joined = predictions.join(
        labels,
        (predictions.c.event_id == labels.c.event_id) & (predictions.c.row_index == labels.c.row_index),
    )
    query = (
        select(predictions.c.customer_id, predictions.c.features, labels.c.churned)
        .select_from(joined)
        .where(predictions.c.customer_id.is_not(None))
        .order_by(predictions.c.predicted_at.desc())
    )
    found: dict[str, LabelledCustomer] = {}
    try:
        with engine.connect() as connection:
            for customer_id, features, churned in connection.execution_options(yield_per=5000).execute(query):
                if customer_id not in found:
                    found[customer_id] = LabelledCustomer(customer_id, features, bool(churned))
                    if len(found) >= max_customers:
                        break
    finally:
        engine.dispose()
    return list(found.values())


class VersionScorer:
    """One version's artefact: its contract reads the records, its model scores them."""

    def __init__(self, artefact: Path) -> None:
        from churn_core.artefact import load_model
        from churn_core.contract import Encoder, FeatureContract
        from churn_core.decision import DecisionMaker

        self.contract = FeatureContract.load(artefact)
        self.model = load_model(artefact)
        self.encoder = Encoder(self.contract)
        self.decisions = DecisionMaker(self.contract)

    def readable(self, features: Mapping[str, Any]) -> bool:
        try:
            self.encoder.batch_from_records([features])
        except (KeyError, TypeError, ValueError):
            return False
        return True

    def score(self, records: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities, risk levels) of the records."""
        batch = self.encoder.batch_from_records(records)
        probabilities = np.asarray(self.model.predict_proba(self.encoder.encode(batch))[:, 1])
        levels = self.decisions.band_levels[self.decisions.risk_band(probabilities)]
        return probabilities, levels


def compare(
    challenger: VersionScorer,
    champion: VersionScorer,
    customers: Sequence[LabelledCustomer],
    *,
    version: str,
    against: str,
) -> ShadowComparison:
    from churn_model.evaluation import classification_metrics

    usable = [c for c in customers if challenger.readable(c.features) and champion.readable(c.features)]
    comparison = ShadowComparison(version, against, len(usable), len(customers) - len(usable))
    churned = np.array([c.churned for c in usable], dtype=bool)
    if len(usable) == 0 or churned.all() or not churned.any():
        return comparison  # ROC AUC needs both outcomes
    records = [c.features for c in usable]
    new_p, new_levels = challenger.score(records)
    old_p, old_levels = champion.score(records)
    for target, scorer, probabilities in (
        (comparison.challenger, challenger, new_p),
        (comparison.champion, champion, old_p),
    ):
        metrics = classification_metrics(churned, probabilities, scorer.contract.model.threshold)
        target.update({name: float(metrics[name]) for name in COMPARED})  # type: ignore[arg-type]
    comparison.risk_level_changed = float(np.mean(new_levels != old_levels))
    return comparison


def evaluate_versions(
    registry: Registry,
    version: str,
    against: str,
    database_url: str,
    *,
    max_customers: int,
    work_dir: Path,
) -> ShadowComparison:
    """Export both artefacts (checksums verified), read the labelled customers, compare."""
    from churn_model.pipeline import export_version

    new = registry.resolve(version).version
    old = registry.resolve(against).version
    customers = labelled_customers(database_url, max_customers)
    challenger = VersionScorer(export_version(registry, new, work_dir / new))
    champion = VersionScorer(export_version(registry, old, work_dir / old))
    return compare(challenger, champion, customers, version=new, against=old)
