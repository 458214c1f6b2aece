"""From a probability and its reason codes to what the business does: prediction, risk level, action.

Shared by the transformer and batch scoring so that both answer the same for the same customer. Written
vectorised (masks over the whole batch, then one table look-up) because batch scoring runs it on millions
of rows; the transformer runs the same code on its small batches.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from churn_core.contract import CustomerBatch, FeatureContract, FloatArray, IntArray

BoolArray = npt.NDArray[np.bool_]

# What the service answers per customer (and batch scoring writes, but for top_factors), in this order.
ANSWER_FIELDS = (
    "churn_probability",
    "churn_prediction",
    "risk_level",
    "recommended_action",
    "top_factors",
    "model_version",
)


@dataclass(frozen=True)
class Decisions:
    """Per customer: prediction at the model threshold, risk level and recommended action.

    Levels and actions are kept as indices into small text tables, so that batch scoring can hand them to
    pyarrow as dictionary arrays instead of building millions of Python strings.
    """

    predictions: BoolArray
    bands: IntArray
    action_codes: IntArray
    level_texts: npt.NDArray[np.object_]
    action_texts: npt.NDArray[np.object_]

    @property
    def risk_levels(self) -> npt.NDArray[np.object_]:
        return self.level_texts[self.bands]

    @property
    def actions(self) -> npt.NDArray[np.object_]:
        return self.action_texts[self.action_codes]


@dataclass(frozen=True)
class _Rule:
    """An action that applies when `applies` holds for a customer whose top factors include a trigger."""

    action: str
    triggers: tuple[str, ...]
    applies: Callable[[DecisionMaker, CustomerBatch], BoolArray]


def _value_is(field: str, value: str) -> Callable[[DecisionMaker, CustomerBatch], BoolArray]:
    def check(maker: DecisionMaker, batch: CustomerBatch) -> BoolArray:
        return maker.category_equals(batch, field, value)

    return check


def _fibre_without_support(maker: DecisionMaker, batch: CustomerBatch) -> BoolArray:
    return maker.category_equals(batch, "InternetService", "Fiber optic") & maker.category_equals(
        batch, "TechSupport", "No"
    )


def _always(maker: DecisionMaker, batch: CustomerBatch) -> BoolArray:
    return np.ones(len(batch), dtype=np.bool_)


# Retention playbook. The customer's top risk factors are read in order (largest contribution first); the
# first factor that raises the risk and has a rule whose condition holds decides the action.
PLAYBOOK: tuple[_Rule, ...] = (
    _Rule(
        "offer a one- or two-year contract with a loyalty discount",
        ("Contract",),
        _value_is("Contract", "Month-to-month"),
    ),
    _Rule(
        "offer free tech support with the fibre plan",
        ("InternetService", "TechSupport"),
        _fibre_without_support,
    ),
    _Rule("offer the online security add-on", ("OnlineSecurity",), _value_is("OnlineSecurity", "No")),
    _Rule(
        "offer a discount for switching to automatic payment",
        ("PaymentMethod",),
        _value_is("PaymentMethod", "Electronic check"),
    ),
    _Rule("enrol in the new-customer onboarding programme", ("tenure", "TotalCharges"), _always),
    _Rule("review the plan for a cheaper bundle", ("MonthlyCharges",), _always),
)
FALLBACK_ACTION = "call to review the customer's needs"
NO_ACTION = "no action: standard engagement"
URGENCY = {
    "Medium": "Send offer: {action}",
    "High": "Call: {action}",
    "Very High": "Priority call within 48 hours: {action}",
}


class DecisionMaker:
    """Applies threshold, risk bands and the playbook of one contract."""

    def __init__(self, contract: FeatureContract) -> None:
        self.threshold = contract.model.threshold
        self.band_levels = np.array([b.level for b in contract.risk_bands], dtype=object)
        self.band_uppers = np.array(
            [np.inf if b.upper is None else b.upper for b in contract.risk_bands], dtype=np.float64
        )
        self._field_index = {name: i for i, name in enumerate(contract.field_names)}
        self._category_column = {f.name: i for i, f in enumerate(contract.category_fields)}
        self._category_codes = {
            f.name: {v: code for code, v in enumerate(f.values)} for f in contract.category_fields
        }
        known = set(contract.field_names)
        self.rules = tuple(r for r in PLAYBOOK if set(r.triggers) <= known)
        actions = [r.action for r in self.rules] + [FALLBACK_ACTION]
        # Final texts, flattened: index = band * len(actions) + action (last action: the fallback).
        self._actions_per_band = len(actions)
        self._texts = np.empty(len(self.band_levels) * len(actions), dtype=object)
        for band, level in enumerate(self.band_levels):
            template = URGENCY.get(str(level))
            for column, action in enumerate(actions):
                text = template.format(action=action) if template else NO_ACTION
                self._texts[band * len(actions) + column] = text

    def category_equals(self, batch: CustomerBatch, field: str, value: str) -> BoolArray:
        code = self._category_codes[field][value]
        return np.asarray(batch.categories[:, self._category_column[field]] == code)

    def risk_band(self, probabilities: FloatArray) -> IntArray:
        """Band index: Low < 0.3 ≤ Medium < 0.5 ≤ High < 0.7 ≤ Very High (with the default bands)."""
        return np.searchsorted(self.band_uppers, probabilities, side="right").astype(np.int64)

    def decide(
        self,
        batch: CustomerBatch,
        probabilities: FloatArray,
        contributions: FloatArray,
        top: IntArray,
    ) -> Decisions:
        bands = self.risk_band(probabilities)
        rows = np.arange(len(batch))
        raising = contributions[rows[:, None], top] > 0.0
        chosen = np.full(len(batch), len(self.rules), dtype=np.int64)
        undecided = np.ones(len(batch), dtype=np.bool_)
        conditions = [rule.applies(self, batch) for rule in self.rules]
        for rank in range(top.shape[1]):
            at_rank = top[:, rank]
            for index, rule in enumerate(self.rules):
                triggered = np.zeros(len(batch), dtype=np.bool_)
                for field in rule.triggers:
                    triggered |= at_rank == self._field_index[field]
                hit = undecided & raising[:, rank] & triggered & conditions[index]
                chosen[hit] = index
                undecided &= ~hit
        return Decisions(
            predictions=probabilities >= self.threshold,
            bands=bands,
            action_codes=bands * self._actions_per_band + chosen,
            level_texts=self.band_levels,
            action_texts=self._texts,
        )
