"""The feature contract: one definition of a customer, shared by training, serving and monitoring.

Training writes it into the model artefact (`churn-contract.json`); the transformer and the drift detector
read it back from there, so the fields, allowed values, encoding, threshold, risk bands and reason-code
tables they apply are exactly those the model was trained with, whatever version of this package they run.
It depends on pydantic and numpy only: the transformer applies it without pandas or scikit-learn.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

CONTRACT_FILE = "churn-contract.json"
CONTRACT_SCHEMA_VERSION = 1
ID_FIELD = "customerID"
TARGET_FIELD = "Churn"

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class CategoryField(_Frozen):
    """A text field with a closed set of values (the contract rejects anything else)."""

    name: str
    kind: Literal["category"] = "category"
    values: tuple[str, ...]
    description: str = ""


class NumberField(_Frozen):
    """A numeric field with a closed range; `integer` fields reject fractions, `values` closes the set."""

    name: str
    kind: Literal["integer", "number"]
    minimum: float
    maximum: float
    values: tuple[int, ...] | None = None
    description: str = ""


FieldSpec = Annotated[CategoryField | NumberField, Field(discriminator="kind")]


class FeatureSpec(_Frozen):
    """One column of the numeric row the predictor sees, derived from one customer field."""

    name: str
    field: str
    transform: Literal["identity", "log1p", "one_hot"]
    value: str | None = None


class CategoryEffect(_Frozen):
    """Reason-code table of a category field: log-odds effect of each value against the average customer."""

    field: str
    kind: Literal["category"] = "category"
    effects: dict[str, float]


class NumberEffect(_Frozen):
    """Reason-code table of a numeric field: effect at grid points, linearly interpolated in between."""

    field: str
    kind: Literal["number"] = "number"
    grid: tuple[float, ...]
    effects: tuple[float, ...]


EffectSpec = Annotated[CategoryEffect | NumberEffect, Field(discriminator="kind")]


class RiskBand(_Frozen):
    """Probabilities below `upper` (and at or above the previous band's) get this level; the last band
    has no upper bound (None)."""

    level: str
    upper: float | None = None


DEFAULT_RISK_BANDS: tuple[RiskBand, ...] = (
    RiskBand(level="Low", upper=0.3),
    RiskBand(level="Medium", upper=0.5),
    RiskBand(level="High", upper=0.7),
    RiskBand(level="Very High"),
)


class ModelInfo(_Frozen):
    """Which model the contract belongs to; `version` is the registry version once registered."""

    name: str = "churn-model"
    version: str = "unregistered"
    run_id: str | None = None
    threshold: float = Field(ge=0.0, le=1.0)
    threshold_objective: str = "f1"


class FeatureContract(_Frozen):
    """Everything a consumer needs to turn a raw customer into a predictor row and an answer."""

    schema_version: int = CONTRACT_SCHEMA_VERSION
    id_field: str = ID_FIELD
    fields: tuple[FieldSpec, ...]
    features: tuple[FeatureSpec, ...]
    model: ModelInfo
    risk_bands: tuple[RiskBand, ...] = DEFAULT_RISK_BANDS
    effects: tuple[EffectSpec, ...] = ()

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)

    @property
    def category_fields(self) -> tuple[CategoryField, ...]:
        return tuple(f for f in self.fields if isinstance(f, CategoryField))

    @property
    def number_fields(self) -> tuple[NumberField, ...]:
        return tuple(f for f in self.fields if isinstance(f, NumberField))

    def with_model(self, **changes: object) -> FeatureContract:
        """A copy with model info changed (version stamped at registration, threshold after tuning)."""
        return self.model_copy(update={"model": self.model.model_copy(update=changes)})

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)

    def save(self, directory: Path) -> Path:
        path = directory / CONTRACT_FILE
        path.write_text(self.to_json() + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, directory_or_file: Path) -> FeatureContract:
        path = directory_or_file
        if path.is_dir():
            path = path / CONTRACT_FILE
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("schema_version") != CONTRACT_SCHEMA_VERSION:
            raise ValueError(
                f"{path}: contract schema_version {data.get('schema_version')!r} is not "
                f"{CONTRACT_SCHEMA_VERSION}; export the model again with this release"
            )
        return cls.model_validate(data)


def _yes_no(name: str, description: str) -> CategoryField:
    return CategoryField(name=name, values=("No", "Yes"), description=description)


def _service(name: str, description: str) -> CategoryField:
    return CategoryField(name=name, values=("No", "No internet service", "Yes"), description=description)


# The 19 customer fields of the IBM Telco data set, as published; the single place they are spelt out.
TELCO_FIELDS: tuple[CategoryField | NumberField, ...] = (
    CategoryField(name="gender", values=("Female", "Male"), description="Customer gender"),
    NumberField(
        name="SeniorCitizen", kind="integer", minimum=0, maximum=1, values=(0, 1), description="1 if 65+"
    ),
    _yes_no("Partner", "Has a partner"),
    _yes_no("Dependents", "Has dependents"),
    NumberField(name="tenure", kind="integer", minimum=0, maximum=1200, description="Months as a customer"),
    _yes_no("PhoneService", "Has phone service"),
    CategoryField(
        name="MultipleLines", values=("No", "No phone service", "Yes"), description="Has multiple lines"
    ),
    CategoryField(
        name="InternetService", values=("DSL", "Fiber optic", "No"), description="Internet service type"
    ),
    _service("OnlineSecurity", "Has online security"),
    _service("OnlineBackup", "Has online backup"),
    _service("DeviceProtection", "Has device protection"),
    _service("TechSupport", "Has tech support"),
    _service("StreamingTV", "Streams TV"),
    _service("StreamingMovies", "Streams movies"),
    CategoryField(
        name="Contract", values=("Month-to-month", "One year", "Two year"), description="Contract term"
    ),
    _yes_no("PaperlessBilling", "Uses paperless billing"),
    CategoryField(
        name="PaymentMethod",
        values=("Bank transfer (automatic)", "Credit card (automatic)", "Electronic check", "Mailed check"),
        description="Payment method",
    ),
    NumberField(name="MonthlyCharges", kind="number", minimum=0, maximum=100_000, description="Monthly bill"),
    NumberField(
        name="TotalCharges",
        kind="number",
        minimum=0,
        maximum=100_000_000,
        description="Total billed so far (0 for new customers)",
    ),
)

# Skewed amounts also enter on a log scale: the linear half of the ensemble cannot bend on its own.
_LOG_FIELDS = ("tenure", "TotalCharges")
# Validated and monitored, but never a model input: gender is a protected attribute and carries no signal
# here (permutation importance ~0.0001 AUC), yet the boosted trees used it in interactions that moved some
# customers' probability by up to 8 points.
NOT_MODEL_INPUTS = ("gender",)


def telco_features(fields: Sequence[CategoryField | NumberField] = TELCO_FIELDS) -> tuple[FeatureSpec, ...]:
    """The encoding: numbers as they are (plus log1p of skewed ones), every category value one-hot."""
    features: list[FeatureSpec] = []
    for spec in fields:
        if spec.name in NOT_MODEL_INPUTS:
            continue
        if isinstance(spec, NumberField):
            features.append(FeatureSpec(name=spec.name, field=spec.name, transform="identity"))
            if spec.name in _LOG_FIELDS:
                features.append(FeatureSpec(name=f"log1p({spec.name})", field=spec.name, transform="log1p"))
        else:
            features.extend(
                FeatureSpec(name=f"{spec.name}={value}", field=spec.name, transform="one_hot", value=value)
                for value in spec.values
            )
    return tuple(features)


def telco_contract(threshold: float = 0.5) -> FeatureContract:
    """The contract before training has filled in threshold, reason codes and version."""
    return FeatureContract(
        fields=TELCO_FIELDS, features=telco_features(), model=ModelInfo(threshold=threshold)
    )


@dataclass(frozen=True)
class CustomerBatch:
    """Validated customers in columnar form: category fields as value indices, numbers as float64.

    Columns follow the contract's field order. Index -1 never appears: validation rejects unknown values
    before a batch is built.
    """

    categories: IntArray  # (n, len(contract.category_fields))
    numbers: FloatArray  # (n, len(contract.number_fields))

    def __len__(self) -> int:
        return int(self.categories.shape[0])


class Encoder:
    """Turns validated customers into predictor rows; built once per contract, reused per request.

    Precomputes, for every encoded column, where its input comes from so that `encode` is a handful of
    vectorised numpy operations whatever the batch size.
    """

    def __init__(self, contract: FeatureContract) -> None:
        self.contract = contract
        category_index = {f.name: i for i, f in enumerate(contract.category_fields)}
        number_index = {f.name: i for i, f in enumerate(contract.number_fields)}
        self._category_codes = {
            f.name: {value: code for code, value in enumerate(f.values)} for f in contract.category_fields
        }
        self._one_hot: list[tuple[int, int, int]] = []  # (output column, category column, value code)
        self._identity: list[tuple[int, int]] = []
        self._log1p: list[tuple[int, int]] = []
        for column, feature in enumerate(contract.features):
            if feature.transform == "one_hot":
                codes = self._category_codes[feature.field]
                assert feature.value is not None
                self._one_hot.append((column, category_index[feature.field], codes[feature.value]))
            elif feature.transform == "identity":
                self._identity.append((column, number_index[feature.field]))
            else:
                self._log1p.append((column, number_index[feature.field]))
        self.width = len(contract.features)
        self._oh_out = np.array([c for c, _, _ in self._one_hot], dtype=np.intp)
        self._oh_src = np.array([s for _, s, _ in self._one_hot], dtype=np.intp)
        self._oh_code = np.array([k for _, _, k in self._one_hot], dtype=np.int64)
        self._id_out = np.array([c for c, _ in self._identity], dtype=np.intp)
        self._id_src = np.array([s for _, s in self._identity], dtype=np.intp)
        self._log_out = np.array([c for c, _ in self._log1p], dtype=np.intp)
        self._log_src = np.array([s for _, s in self._log1p], dtype=np.intp)

    def category_code(self, field: str, value: str) -> int | None:
        """Index of `value` among the field's allowed values, or None when the contract does not allow it."""
        return self._category_codes[field].get(value)

    def encode(self, batch: CustomerBatch) -> FloatArray:
        rows = np.empty((len(batch), self.width), dtype=np.float64)
        rows[:, self._oh_out] = batch.categories[:, self._oh_src] == self._oh_code
        rows[:, self._id_out] = batch.numbers[:, self._id_src]
        rows[:, self._log_out] = np.log1p(batch.numbers[:, self._log_src])
        return rows

    def batch_from_records(self, records: Sequence[Mapping[str, object]]) -> CustomerBatch:
        """Columnar batch from already-validated records (dicts or pydantic dumps) in contract order."""
        categories = np.array(
            [
                [self._category_codes[f.name][str(record[f.name])] for f in self.contract.category_fields]
                for record in records
            ],
            dtype=np.int64,
        ).reshape(len(records), len(self.contract.category_fields))
        numbers = np.array(
            [[float(record[f.name]) for f in self.contract.number_fields] for record in records],  # type: ignore[arg-type]
            dtype=np.float64,
        ).reshape(len(records), len(self.contract.number_fields))
        return CustomerBatch(categories=categories, numbers=numbers)
