"""The request mix of real clients, shared by the locustfile and the fault scenarios' load loop.

Customers are drawn from the feature contract's own field table (churn_core.contract.TELCO_FIELDS, the one
place the 19 fields are spelt out), consistent the way the Telco data is (no phone service -> "No phone
service" lines, no internet -> "No internet service" extras), so every valid request must be answered 200.
The invalid share must be refused with a 4xx naming the problem: those requests count as a success when
they are refused, and as a failure when they are served (200) or crash (5xx).

Bodies are built once, at start, in a pool per request kind: the load generator then spends its CPU on
sending, not on JSON encoding (it shares the machine's cores with the stack).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from churn_core.contract import TELCO_FIELDS, CategoryField

V2_DATATYPE = {"category": "BYTES", "integer": "INT64", "number": "FP64"}
CUSTOMER_POOL = 5_000  # customer ids cycle through this many, so feedback labels find their predictions
BODIES_PER_KIND = 64

# name -> weight (percent of requests). What a churn service's clients send: mostly one customer at a
# time from the CRM (v2, some v1 legacy callers), campaign tools scoring pages of 10 or 100, labels coming
# back, and a small share of broken requests.
DEFAULT_MIX: dict[str, float] = {
    "v2_single": 50.0,
    "v2_batch10": 12.0,
    "v2_batch100": 3.0,
    "v1_single": 20.0,
    "feedback": 10.0,
    "invalid": 5.0,
}


@dataclass(frozen=True)
class Planned:
    """One request to send: where (`target` is "serving" or "detector"), what, and what answer is right."""

    kind: str
    target: str
    path: str
    body: bytes
    customers: int  # customers scored by a 200 (0 for feedback and invalid requests)
    expect_4xx: bool = False

    @property
    def headers(self) -> dict[str, str]:
        return {"content-type": "application/json"}


def customer(rng: random.Random, index: int) -> dict[str, Any]:
    """A plausible customer: every field from the contract's domain, the service fields consistent."""
    values: dict[str, Any] = {"customerID": f"LOAD-{index % CUSTOMER_POOL:05d}"}
    for spec in TELCO_FIELDS:
        if isinstance(spec, CategoryField):
            values[spec.name] = rng.choice(spec.values)
        elif spec.values:
            values[spec.name] = int(rng.choice(spec.values))
    values["tenure"] = rng.randint(0, 72)
    if values["PhoneService"] == "No":
        values["MultipleLines"] = "No phone service"
    elif values["MultipleLines"] == "No phone service":
        values["MultipleLines"] = "No"
    internet_extras = ("OnlineSecurity", "OnlineBackup", "DeviceProtection", "TechSupport")
    for name in (*internet_extras, "StreamingTV", "StreamingMovies"):
        if values["InternetService"] == "No":
            values[name] = "No internet service"
        elif values[name] == "No internet service":
            values[name] = "No"
    monthly = round(rng.uniform(18.0, 119.0), 2)
    values["MonthlyCharges"] = monthly
    values["TotalCharges"] = round(monthly * values["tenure"], 2)
    return values


def _number_kind(name: str) -> str:
    for spec in TELCO_FIELDS:
        if spec.name == name:
            return spec.kind
    return "category"


def v2_body(customers: Sequence[Mapping[str, Any]]) -> bytes:
    """v2 inference request: one named tensor per field (customerID included), as the transformer takes it."""
    inputs = [
        {
            "name": name,
            "datatype": V2_DATATYPE[_number_kind(name)],
            "shape": [len(customers)],
            "data": [c[name] for c in customers],
        }
        for name in customers[0]
    ]
    return orjson.dumps({"inputs": inputs})


def v1_body(customers: Sequence[Mapping[str, Any]]) -> bytes:
    return orjson.dumps({"instances": list(customers)})


def feedback_body(rng: random.Random, ids: Sequence[str]) -> bytes:
    """One to five labels for customers of the pool, observed now (the detector's `POST /feedback`)."""
    labels = [
        {"customer_id": rng.choice(ids), "churned": rng.random() < 0.27, "observed_at": _now()}
        for _ in range(rng.randint(1, 5))
    ]
    return orjson.dumps({"labels": labels})


def _now() -> str:
    return datetime.now(UTC).isoformat()


def invalid_bodies(rng: random.Random, model: str) -> list[Planned]:
    """Requests a client gets wrong; each must be refused with a 4xx (400 or 422), never served or a 5xx."""
    good = customer(rng, rng.randrange(CUSTOMER_POOL))
    out_of_range = {**good, "tenure": -3}
    unknown_category = {**good, "Contract": "Weekly"}
    missing = {k: v for k, v in good.items() if k != "MonthlyCharges"}
    wrong_type = {**good, "SeniorCitizen": "often"}
    v1 = f"/v1/models/{model}:predict"
    v2 = f"/v2/models/{model}/infer"
    cases = [
        (v1, v1_body([out_of_range])),
        (v2, v2_body([unknown_category])),
        (v1, v1_body([missing])),
        (v2, v2_body([wrong_type])),
        (v1, b'{"instances": [{"customerID": "broken"'),  # truncated JSON
        (v2, b'{"inputs": "not a list"}'),
    ]
    planned = [Planned("invalid", "serving", path, body, 0, expect_4xx=True) for path, body in cases]
    planned.append(
        Planned(
            "invalid",
            "detector",
            "/feedback",
            orjson.dumps([{"customer_id": "LOAD-00001", "churned": "perhaps"}]),
            0,
            expect_4xx=True,
        )
    )
    return planned


class RequestMix:
    """Draws the next request of the mix; pools of ready bodies per kind, reproducible with a seed."""

    def __init__(
        self, weights: Mapping[str, float] | None = None, *, model: str = "churn", seed: int = 7
    ) -> None:
        self.weights = dict(weights or DEFAULT_MIX)
        unknown = set(self.weights) - set(DEFAULT_MIX)
        if unknown:
            raise ValueError(f"unknown request kinds {sorted(unknown)}; known: {sorted(DEFAULT_MIX)}")
        self.model = model
        self.rng = random.Random(seed)
        self._counter = 0
        self.pools: dict[str, list[Planned]] = {kind: self._pool(kind) for kind in self.weights}
        self._kinds = [kind for kind, weight in self.weights.items() if weight > 0]
        self._cumulative = _cumulative([self.weights[k] for k in self._kinds])

    def _customers(self, n: int) -> list[dict[str, Any]]:
        start = self._counter
        self._counter += n
        return [customer(self.rng, start + i) for i in range(n)]

    def _pool(self, kind: str) -> list[Planned]:
        v1 = f"/v1/models/{self.model}:predict"
        v2 = f"/v2/models/{self.model}/infer"
        builders: dict[str, Callable[[], Planned]] = {
            "v2_single": lambda: Planned(kind, "serving", v2, v2_body(self._customers(1)), 1),
            "v2_batch10": lambda: Planned(kind, "serving", v2, v2_body(self._customers(10)), 10),
            "v2_batch100": lambda: Planned(kind, "serving", v2, v2_body(self._customers(100)), 100),
            "v1_single": lambda: Planned(kind, "serving", v1, v1_body(self._customers(1)), 1),
            "feedback": lambda: Planned(
                kind, "detector", "/feedback", feedback_body(self.rng, self._known_ids()), 0
            ),
        }
        if kind == "invalid":
            return invalid_bodies(self.rng, self.model)
        return [builders[kind]() for _ in range(BODIES_PER_KIND)]

    def _known_ids(self) -> list[str]:
        return [f"LOAD-{i % CUSTOMER_POOL:05d}" for i in range(min(self._counter, CUSTOMER_POOL) or 1)]

    def next(self) -> Planned:
        kind = self._kinds[_pick(self._cumulative, self.rng.random())]
        return self.rng.choice(self.pools[kind])


def _cumulative(weights: Sequence[float]) -> list[float]:
    total = sum(weights)
    running, out = 0.0, []
    for weight in weights:
        running += weight / total
        out.append(running)
    return out


def _pick(cumulative: Sequence[float], draw: float) -> int:
    for index, edge in enumerate(cumulative):
        if draw < edge:
            return index
    return len(cumulative) - 1


def parse_mix(text: str) -> dict[str, float]:
    """`v2_single=60,feedback=0` -> weights over the default mix (unnamed kinds keep their default)."""
    weights = dict(DEFAULT_MIX)
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = part.partition("=")
        if name not in DEFAULT_MIX:
            raise ValueError(f"unknown request kind {name!r}; known: {', '.join(DEFAULT_MIX)}")
        weights[name] = float(value)
    return weights
