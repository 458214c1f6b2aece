"""The serving artefact: the directory a KServe InferenceService's `storageUri` points at.

Both halves of the InferenceService load the same directory, so they cannot disagree on the model:
- the predictor (MLServer's sklearn runtime) reads `model-settings.json` and `model.joblib`;
- the transformer reads `churn-contract.json` (fields, encoding, threshold, risk bands, reason codes,
  model version) and checks at start that the predictor reports the same version;
- the drift detector reads `reference.json.gz` (the training sample it compares live traffic with).
`manifest.json` records data fingerprint, library versions and a checksum of every file.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import platform
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from churn_model.contract import CONTRACT_FILE, CustomerBatch, FeatureContract, FloatArray

MODEL_FILE = "model.joblib"
MODEL_SETTINGS_FILE = "model-settings.json"
METRICS_FILE = "metrics.json"
REFERENCE_FILE = "reference.json.gz"
TEST_PREDICTIONS_FILE = "test-predictions.json"
MANIFEST_FILE = "manifest.json"
SERVING_NAME = "churn"
RECORDED_LIBRARIES = ("scikit-learn", "numpy", "scipy", "joblib", "mlflow", "pyarrow")


class ArtefactError(RuntimeError):
    """An artefact directory that is incomplete or was changed after it was written."""


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in RECORDED_LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


@dataclass(frozen=True)
class TrainingRecord:
    """What the artefact tells about how the model came to be."""

    data_file: str
    data_sha256: str
    rows: int
    churn_rate: float
    config: dict[str, Any]
    metrics: dict[str, Any]


def reference_columns(contract: FeatureContract, batch: CustomerBatch) -> dict[str, list[Any]]:
    """Raw field values of a batch, JSON-ready (category strings, numbers as floats)."""
    columns: dict[str, list[Any]] = {}
    for index, spec in enumerate(contract.category_fields):
        values = np.asarray(spec.values, dtype=object)
        columns[spec.name] = values[batch.categories[:, index]].tolist()
    for index, number_spec in enumerate(contract.number_fields):
        columns[number_spec.name] = batch.numbers[:, index].tolist()
    return {name: columns[name] for name in contract.field_names}


def write_artefact(
    directory: Path,
    *,
    model: object,
    contract: FeatureContract,
    record: TrainingRecord,
    reference: CustomerBatch,
    reference_probabilities: FloatArray,
    test_churned: np.ndarray,
    test_probabilities: FloatArray,
) -> Path:
    """Write every file of the serving artefact into `directory` (created; must be empty or new)."""
    import joblib

    directory.mkdir(parents=True, exist_ok=True)
    version = contract.model.version
    joblib.dump(model, directory / MODEL_FILE)
    settings = {
        "name": SERVING_NAME,
        "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": f"./{MODEL_FILE}", "version": version},
    }
    (directory / MODEL_SETTINGS_FILE).write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
    contract.save(directory)
    (directory / METRICS_FILE).write_text(json.dumps(record.metrics, indent=2) + "\n", encoding="utf-8")
    (directory / TEST_PREDICTIONS_FILE).write_text(
        json.dumps(
            {
                "churned": [bool(x) for x in test_churned],
                "probabilities": [float(p) for p in test_probabilities],
            }
        ),
        encoding="utf-8",
    )
    reference_document = {
        "description": "development split of the training data, raw fields, with the model's probabilities",
        "rows": len(reference),
        "fields": reference_columns(contract, reference),
        "probabilities": [float(p) for p in reference_probabilities],
    }
    with gzip.open(directory / REFERENCE_FILE, "wt", encoding="utf-8") as handle:
        json.dump(reference_document, handle)
    manifest = {
        "model": contract.model.model_dump(),
        "created_at": datetime.now(UTC).isoformat(),
        "data": {
            "file": record.data_file,
            "sha256": record.data_sha256,
            "rows": record.rows,
            "churn_rate": record.churn_rate,
        },
        "training": record.config,
        "libraries": library_versions(),
        "files": {
            name: _sha256(directory / name)
            for name in (
                MODEL_FILE,
                MODEL_SETTINGS_FILE,
                CONTRACT_FILE,
                METRICS_FILE,
                TEST_PREDICTIONS_FILE,
                REFERENCE_FILE,
            )
        },
    }
    (directory / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return directory


def verify_artefact(directory: Path) -> dict[str, Any]:
    """Check every file against the manifest's checksums; returns the manifest."""
    manifest_path = directory / MANIFEST_FILE
    if not manifest_path.is_file():
        raise ArtefactError(f"{directory}: no {MANIFEST_FILE}; not a ChurnOps serving artefact")
    manifest: dict[str, Any] = json.loads(manifest_path.read_text(encoding="utf-8"))
    for name, expected in manifest["files"].items():
        path = directory / name
        if not path.is_file():
            raise ArtefactError(f"{directory}: {name} is missing")
        if _sha256(path) != expected:
            raise ArtefactError(f"{directory}: {name} does not match its checksum in {MANIFEST_FILE}")
    return manifest


def load_reference(directory: Path) -> dict[str, Any]:
    with gzip.open(directory / REFERENCE_FILE, "rt", encoding="utf-8") as handle:
        document: dict[str, Any] = json.load(handle)
    return document


def load_model(directory: Path) -> Any:
    import joblib

    verify_artefact(directory)
    return joblib.load(directory / MODEL_FILE)
