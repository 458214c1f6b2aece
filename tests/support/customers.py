"""Customers as clients send them: CSV rows of the Telco file turned into typed JSON-ready records."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

INTEGER_FIELDS = frozenset({"SeniorCitizen", "tenure"})
NUMBER_FIELDS = frozenset({"MonthlyCharges", "TotalCharges"})


def customer_from_row(row: Mapping[str, str], with_id: bool = True) -> dict[str, Any]:
    """Typed numbers, the blank TotalCharges of new customers as 0, no `Churn`."""
    customer: dict[str, Any] = {}
    for name, text in row.items():
        if name == "Churn" or (name == "customerID" and not with_id):
            continue
        if name in INTEGER_FIELDS:
            customer[name] = int(text)
        elif name in NUMBER_FIELDS:
            customer[name] = float(text) if text.strip() else 0.0
        else:
            customer[name] = text
    return customer


def sample_customers(rows: Sequence[Mapping[str, str]], n: int, seed: int = 0) -> list[dict[str, Any]]:
    """`n` customers drawn with a fixed seed (with replacement only when `n` exceeds the rows)."""
    picks = np.random.default_rng(seed).choice(len(rows), size=n, replace=n > len(rows))
    return [customer_from_row(rows[int(i)]) for i in picks]
