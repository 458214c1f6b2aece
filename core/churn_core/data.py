"""Reading and validating Telco customer CSVs, in streamed chunks, for training and batch scoring.

pyarrow's CSV reader and compute kernels do the parsing and the membership/range checks in C++, so a
million-row file validates in about a second; Python only runs to phrase the error messages. Every
problem is reported with its column, line number in the file and offending value.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from churn_core.contract import (
    ID_FIELD,
    TARGET_FIELD,
    CustomerBatch,
    FeatureContract,
    NumberField,
)

DATA_FILE_NAME = "telco-customer-churn.csv"
MAX_REPORTED_ERRORS = 20
CHUNK_BYTES = 8 << 20


@dataclass(frozen=True)
class DataProblem:
    column: str
    line: int
    value: str
    reason: str

    def __str__(self) -> str:
        return f"column {self.column!r}, line {self.line}: {self.value!r} {self.reason}"


class DataValidationError(ValueError):
    """The file does not match the contract; `problems` names column, line and value of each issue."""

    def __init__(self, source: str, problems: Sequence[DataProblem], total: int | None = None) -> None:
        self.problems = list(problems)
        count = total if total is not None else len(self.problems)
        shown = "\n  ".join(str(p) for p in self.problems[:MAX_REPORTED_ERRORS])
        more = f"\n  ... and {count - MAX_REPORTED_ERRORS} more" if count > MAX_REPORTED_ERRORS else ""
        super().__init__(f"{source}: {count} invalid value(s)\n  {shown}{more}")


class DataNotFoundError(FileNotFoundError):
    pass


@dataclass(frozen=True)
class CustomerChunk:
    """Validated customers of one chunk: ids, columnar batch, labels when the file has them."""

    ids: pa.Array
    batch: CustomerBatch
    churned: npt.NDArray[np.bool_] | None
    first_line: int


class DataLocation(Protocol):
    """Any settings object that may name the data file (training's `ModelSettings`)."""

    @property
    def data(self) -> Path | None: ...


def resolve_data_path(explicit: Path | None, settings: DataLocation) -> Path:
    """`--data`, then CHURNOPS_MODEL_DATA, then ./data/, then ../shared/data/: the first that exists."""
    candidates = [explicit] if explicit is not None else []
    if settings.data is not None:
        candidates.append(settings.data)
    candidates += [Path("data") / DATA_FILE_NAME, Path("..") / "shared" / "data" / DATA_FILE_NAME]
    if explicit is not None:
        candidates = candidates[:1]
    for candidate in candidates:
        if candidate is not None and candidate.is_file():
            return candidate
    tried = ", ".join(str(c) for c in candidates if c is not None)
    raise DataNotFoundError(
        f"no Telco CSV found (tried {tried}); pass --data PATH, set CHURNOPS_MODEL_DATA or run "
        "`churnops data download`"
    )


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _header(path: Path) -> list[str]:
    with path.open(newline="", encoding="utf-8") as handle:
        return next(csv.reader(handle), [])


class _ProblemLog:
    """The problems of one chunk: all counted, the first MAX_REPORTED_ERRORS spelt out."""

    def __init__(self, first_line: int) -> None:
        self.first_line = first_line
        self.reported: list[DataProblem] = []
        self.total = 0

    def report(self, column: str, bad: npt.NDArray[np.bool_], values: pa.Array, reason: str) -> None:
        rows = np.flatnonzero(bad)
        self.total += len(rows)
        self.reported.extend(
            DataProblem(column, self.first_line + int(row), str(values[int(row)]), reason)
            for row in rows[: MAX_REPORTED_ERRORS - len(self.reported)]
        )


class CustomerReader:
    """Streams a customer CSV in validated chunks; `require_target` for training files."""

    def __init__(self, contract: FeatureContract, *, require_target: bool) -> None:
        self.contract = contract
        self.require_target = require_target
        self._value_sets = {f.name: pa.array(f.values, type=pa.string()) for f in contract.category_fields}

    def check_header(self, path: Path) -> list[str]:
        header = _header(path)
        required = list(self.contract.field_names) + ([TARGET_FIELD] if self.require_target else [])
        missing = [c for c in required if c not in header]
        allowed = {*self.contract.field_names, ID_FIELD, TARGET_FIELD}
        unknown = [c for c in header if c not in allowed]
        problems = [DataProblem(c, 1, "", "column is missing") for c in missing]
        problems += [DataProblem(c, 1, c, "is not a column of the contract") for c in unknown]
        if len(set(header)) != len(header):
            problems.append(DataProblem(",".join(header), 1, "", "header has duplicate columns"))
        if problems:
            raise DataValidationError(str(path), problems)
        return header

    def chunks(self, path: Path, block_size: int = CHUNK_BYTES) -> Iterator[CustomerChunk]:
        header = self.check_header(path)
        columns = [c for c in header if c in {*self.contract.field_names, ID_FIELD, TARGET_FIELD}]
        # A Python file object, not the path: given a path (or an Arrow file), Arrow's streaming reader read
        # ahead without bound (135 MB of a 133 MB file held at once); through a Python file it holds ~20 MB.
        handle = path.open("rb")
        reader = pacsv.open_csv(
            handle,
            read_options=pacsv.ReadOptions(block_size=block_size, use_threads=False),
            convert_options=pacsv.ConvertOptions(
                column_types=dict.fromkeys(columns, pa.string()),
                include_columns=columns,
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
        first_line = 2
        with handle:
            for record_batch in reader:
                if record_batch.num_rows == 0:
                    continue
                yield self.validate(record_batch, first_line, str(path))
                first_line += record_batch.num_rows

    def read_all(self, path: Path) -> CustomerChunk:
        parts = list(self.chunks(path))
        if not parts:
            raise DataValidationError(str(path), [DataProblem("*", 2, "", "file has no customers")])
        churned = [p.churned for p in parts]
        return CustomerChunk(
            ids=pa.concat_arrays([p.ids for p in parts]),
            batch=CustomerBatch(
                categories=np.concatenate([p.batch.categories for p in parts]),
                numbers=np.concatenate([p.batch.numbers for p in parts]),
            ),
            churned=None if any(c is None for c in churned) else np.concatenate(churned),  # type: ignore[arg-type]
            first_line=2,
        )

    def validate(self, table: pa.RecordBatch, first_line: int, source: str) -> CustomerChunk:
        problems = _ProblemLog(first_line)
        categories = self._categories(table, problems)
        numbers = self._numbers(table, problems)
        churned = self._target(table, problems)
        if ID_FIELD in table.schema.names:
            ids = table.column(ID_FIELD)
        else:
            ids = pa.array([f"line-{first_line + i}" for i in range(table.num_rows)], type=pa.string())
        if problems.reported:
            raise DataValidationError(source, problems.reported, problems.total)
        return CustomerChunk(
            ids=ids,
            batch=CustomerBatch(categories=categories, numbers=numbers),
            churned=churned if self.require_target or TARGET_FIELD in table.schema.names else None,
            first_line=first_line,
        )

    def _categories(self, table: pa.RecordBatch, problems: _ProblemLog) -> npt.NDArray[np.int64]:
        categories = np.empty((table.num_rows, len(self.contract.category_fields)), dtype=np.int64)
        for index, spec in enumerate(self.contract.category_fields):
            column = table.column(spec.name)
            codes = pc.index_in(column, value_set=self._value_sets[spec.name])
            bad = np.asarray(codes.is_null())
            if bad.any():
                problems.report(spec.name, bad, column, f"is not one of {list(spec.values)}")
            categories[:, index] = np.asarray(codes.fill_null(0))
        return categories

    def _numbers(self, table: pa.RecordBatch, problems: _ProblemLog) -> npt.NDArray[np.float64]:
        tenure = None
        numbers = np.empty((table.num_rows, len(self.contract.number_fields)), dtype=np.float64)
        for index, number_spec in enumerate(self.contract.number_fields):
            column = table.column(number_spec.name)
            values, bad = self._parse_numbers(column)
            if number_spec.name == "TotalCharges":
                values, bad = self._blank_total_charges(column, values, bad, tenure)
            if bad.any():
                problems.report(number_spec.name, bad, column, "is not a number")
            out_of_range = ~bad & self._out_of_range(number_spec, values)
            if out_of_range.any():
                problems.report(number_spec.name, out_of_range, column, self._range_text(number_spec))
            numbers[:, index] = np.where(bad | out_of_range, 0.0, values)
            if number_spec.name == "tenure":
                tenure = numbers[:, index]
        return numbers

    def _target(self, table: pa.RecordBatch, problems: _ProblemLog) -> npt.NDArray[np.bool_] | None:
        if TARGET_FIELD not in table.schema.names:
            return None
        target = table.column(TARGET_FIELD)
        is_yes = np.asarray(pc.equal(target, "Yes"))
        is_no = np.asarray(pc.equal(target, "No"))
        bad = ~(is_yes | is_no)
        if self.require_target and bad.any():
            problems.report(TARGET_FIELD, bad, target, "is not Yes or No")
        return is_yes

    @staticmethod
    def _parse_numbers(column: pa.Array) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
        trimmed = pc.utf8_trim_whitespace(column)
        # Blanks become nulls (then NaN, then "not a number" unless a quirk rule accepts them) so that a
        # column with blanks still parses in one vectorised cast.
        trimmed = pc.if_else(pc.equal(trimmed, ""), pa.scalar(None, pa.string()), trimmed)
        try:
            parsed = pc.cast(trimmed, pa.float64())
            values = np.asarray(parsed.fill_null(np.nan), dtype=np.float64)
        except pa.ArrowInvalid:
            # Rare path (a bad value somewhere): parse one by one to find exactly which.
            values = np.array([_to_float(v) for v in trimmed.to_pylist()], dtype=np.float64)
        # pyarrow accepts "nan"/"inf" spellings: the isfinite check below rejects them too.
        return values, ~np.isfinite(values)

    @staticmethod
    def _blank_total_charges(
        column: pa.Array,
        values: npt.NDArray[np.float64],
        bad: npt.NDArray[np.bool_],
        tenure: npt.NDArray[np.float64] | None,
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
        """The published file leaves TotalCharges blank for customers in their first month: that is 0."""
        blank = np.asarray(pc.equal(pc.utf8_trim_whitespace(column), ""))
        new_customer = blank if tenure is None else blank & (tenure == 0)
        return np.where(new_customer, 0.0, values), bad & ~new_customer

    @staticmethod
    def _out_of_range(spec: NumberField, values: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
        outside = (values < spec.minimum) | (values > spec.maximum)
        if spec.kind == "integer":
            outside |= values != np.floor(values)
        if spec.values is not None:
            outside |= ~np.isin(values, np.asarray(spec.values, dtype=np.float64))
        return np.asarray(outside)

    @staticmethod
    def _range_text(spec: NumberField) -> str:
        if spec.values is not None:
            return f"is not one of {list(spec.values)}"
        kind = "a whole number" if spec.kind == "integer" else "a number"
        return f"is not {kind} between {spec.minimum:g} and {spec.maximum:g}"


def _to_float(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "") else float("nan")
    except ValueError:
        return float("nan")


def category_values(contract: FeatureContract, batch: CustomerBatch) -> dict[str, npt.NDArray[np.object_]]:
    """Columns of raw values (strings for categories, floats for numbers) of a validated batch."""
    columns: dict[str, npt.NDArray[np.object_]] = {}
    for index, spec in enumerate(contract.category_fields):
        table = np.array(spec.values, dtype=object)
        columns[spec.name] = table[batch.categories[:, index]]
    for index, number_spec in enumerate(contract.number_fields):
        columns[number_spec.name] = batch.numbers[:, index].astype(object)
    return columns
