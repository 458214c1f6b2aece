"""Reproducible windows for proving and demonstrating the detector: reference-like resamples of the Telco
data and controlled shifts of exactly one field.

A shift changes one column and nothing else, so "flags that field alone" is a fair expectation: scaling
MonthlyCharges leaves TotalCharges (which in real life would follow) untouched, and raising the share of
month-to-month contracts relabels contracts without bringing the short tenures such customers have. A
realistic mix shift (resampling whole customers) moves correlated fields too, and the detector rightly
flags them.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from churn_core.contract import FeatureContract

Columns = dict[str, list[Any]]
SHIFTS = ("none", "monthly-charges", "contract")


def read_customers(contract: FeatureContract, path: Path, *, require_target: bool = False) -> Columns:
    """Every customer of a Telco-shaped CSV as raw columns (validated against the contract)."""
    from churn_core.artefact import reference_columns
    from churn_core.data import CustomerReader

    customers = CustomerReader(contract, require_target=require_target).read_all(path)
    return reference_columns(contract, customers.batch)


def resample(columns: Mapping[str, Sequence[Any]], rows: int, seed: int) -> Columns:
    """`rows` customers drawn with replacement (fixed seed): a window from the same population."""
    size = len(next(iter(columns.values())))
    picked = np.random.default_rng(seed).integers(0, size, rows)
    return {name: [values[i] for i in picked] for name, values in columns.items()}


def scale_field(columns: Mapping[str, Sequence[Any]], name: str, factor: float, decimals: int = 2) -> Columns:
    """The same customers with one numeric field multiplied (e.g. MonthlyCharges x1.15), rounded to
    `decimals` (0 for an integer field such as tenure, which the contract keeps whole)."""
    shifted = {k: list(v) for k, v in columns.items()}
    shifted[name] = [round(float(v) * factor, decimals) for v in columns[name]]
    if decimals == 0:
        shifted[name] = [float(v) for v in shifted[name]]
    return shifted


def move_share(
    columns: Mapping[str, Sequence[Any]], name: str, value: str, points: float, seed: int
) -> Columns:
    """The same customers with each one not already `value` relabelled `value` with the probability that
    raises its expected share by `points` (0.10: ten points), the rest untouched: a mix shift of a stated
    size that keeps the window's sampling noise (unlike `raise_share`, which sets the share exactly)."""
    shifted = {k: list(v) for k, v in columns.items()}
    labels = np.asarray(columns[name], dtype=object)
    others = np.flatnonzero(labels != value)
    if others.size == 0 or points <= 0:
        return shifted
    chance = min(1.0, points * len(labels) / others.size)
    chosen = others[np.random.default_rng(seed).random(others.size) < chance]
    for i in chosen:
        shifted[name][int(i)] = value
    return shifted


def raise_share(
    columns: Mapping[str, Sequence[Any]], name: str, value: str, share: float, seed: int
) -> Columns:
    """The same customers with randomly chosen others relabelled `value` until it has `share` of them."""
    shifted = {k: list(v) for k, v in columns.items()}
    labels = np.asarray(columns[name], dtype=object)
    others = np.flatnonzero(labels != value)
    wanted = round(share * len(labels)) - (len(labels) - len(others))
    if wanted > 0:
        chosen = np.random.default_rng(seed).choice(others, size=min(wanted, len(others)), replace=False)
        for i in chosen:
            shifted[name][int(i)] = value
    return shifted


def scenario(columns: Mapping[str, Sequence[Any]], shift: str, rows: int = 5000, seed: int = 7) -> Columns:
    """The named window: `none` (resample), `monthly-charges` (x1.15), `contract` (month-to-month 75 %)."""
    window = resample(columns, rows, seed)
    if shift == "none":
        return window
    if shift == "monthly-charges":
        return scale_field(window, "MonthlyCharges", 1.15)
    if shift == "contract":
        return raise_share(window, "Contract", "Month-to-month", 0.75, seed)
    raise ValueError(f"shift must be one of {list(SHIFTS)}, not {shift!r}")


def write_customers(contract: FeatureContract, columns: Mapping[str, Sequence[Any]], path: Path) -> Path:
    """A Telco-shaped CSV (contract columns, no Churn) that `churnops monitor drift --current` reads."""
    names = list(contract.field_names)
    integers = {f.name for f in contract.number_fields if f.kind == "integer"}
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["customerID", *names])
        size = len(columns[names[0]])
        for i in range(size):
            writer.writerow(
                [f"W{i:06d}"] + [int(columns[n][i]) if n in integers else columns[n][i] for n in names]
            )
    return path
