"""Reason codes: which of a customer's fields raise their churn risk most, and by how much.

The predictor runs in another process (and image), so the transformer cannot ask the model why. Training
therefore leaves a compact additive summary of the model in the contract: for every field, the centred
partial dependence of the model's log-odds on that field (computed in `churn_model.effects`). Here the
summary is applied with table look-ups and linear interpolation only, so a batch of any size costs a few
numpy operations and agrees exactly with batch scoring.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from churn_core.contract import (
    CategoryEffect,
    CategoryField,
    CustomerBatch,
    FeatureContract,
    FloatArray,
    IntArray,
    NumberEffect,
)


@dataclass(frozen=True)
class Factor:
    """One reason code: a field, the customer's value of it, its signed effect on the log-odds."""

    field: str
    value: str | float
    contribution: float

    def as_dict(self) -> dict[str, str | float]:
        return {"feature": self.field, "value": self.value, "contribution": round(self.contribution, 4)}


class Explainer:
    """Per-field contributions and top factors for validated customers; built once per contract."""

    def __init__(self, contract: FeatureContract, top_k: int = 3) -> None:
        effects = {e.field: e for e in contract.effects}
        missing = [name for name in contract.field_names if name not in effects]
        if missing:
            raise ValueError(f"contract has no reason-code table for: {', '.join(missing)}")
        self.top_k = top_k
        self.contract = contract
        # Output columns follow the contract's field order; remember where each comes from.
        self.field_names = contract.field_names
        self._category_tables: list[tuple[int, int, FloatArray]] = []  # (out col, batch col, effect by code)
        self._number_tables: list[tuple[int, int, FloatArray, FloatArray]] = []
        category_column = {f.name: i for i, f in enumerate(contract.category_fields)}
        number_column = {f.name: i for i, f in enumerate(contract.number_fields)}
        for out, spec in enumerate(contract.fields):
            effect = effects[spec.name]
            if isinstance(spec, CategoryField):
                assert isinstance(effect, CategoryEffect), spec.name
                table = np.array([effect.effects[value] for value in spec.values], dtype=np.float64)
                self._category_tables.append((out, category_column[spec.name], table))
            else:
                assert isinstance(effect, NumberEffect), spec.name
                self._number_tables.append(
                    (
                        out,
                        number_column[spec.name],
                        np.asarray(effect.grid, dtype=np.float64),
                        np.asarray(effect.effects, dtype=np.float64),
                    )
                )
        self._category_values = [spec.values for spec in contract.category_fields]
        self._out_to_category = {out: col for out, col, _ in self._category_tables}
        self._out_to_number = {out: col for out, col, _, _ in self._number_tables}

    def contributions(self, batch: CustomerBatch) -> FloatArray:
        """(n, fields) matrix of signed log-odds contributions, in contract field order."""
        result = np.empty((len(batch), len(self.field_names)), dtype=np.float64)
        for out, col, table in self._category_tables:
            result[:, out] = table[batch.categories[:, col]]
        for out, col, grid, effects in self._number_tables:
            result[:, out] = np.interp(batch.numbers[:, col], grid, effects)
        return result

    def top_indices(self, contributions: FloatArray) -> IntArray:
        """(n, k) field indices ordered by contribution, largest first (ties: contract order)."""
        order = np.argsort(-contributions, axis=1, kind="stable")
        return order[:, : self.top_k].astype(np.int64)

    def factors(self, batch: CustomerBatch, contributions: FloatArray, top: IntArray) -> list[list[Factor]]:
        """Top factors as objects, for answers that show them (the transformer); scoring skips this."""
        result: list[list[Factor]] = []
        for row in range(len(batch)):
            row_factors = []
            for out in top[row]:
                out_index = int(out)
                value: str | float
                if out_index in self._out_to_category:
                    col = self._out_to_category[out_index]
                    value = self._category_values[col][int(batch.categories[row, col])]
                else:
                    value = float(batch.numbers[row, self._out_to_number[out_index]])
                row_factors.append(
                    Factor(self.field_names[out_index], value, float(contributions[row, out_index]))
                )
            result.append(row_factors)
        return result
