"""Writing the serving artefact at the end of training (the reading side is `churn_core.artefact`).

Only training writes artefacts, so the pickling (joblib), the library inventory and the training record
live here, and the runtimes that read the directory never import them.
"""

from __future__ import annotations

import gzip
import json
import platform
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from churn_core.artefact import (
    MANIFEST_FILE,
    METRICS_FILE,
    MODEL_FILE,
    MODEL_SETTINGS_FILE,
    REFERENCE_FILE,
    SERVING_NAME,
    TEST_PREDICTIONS_FILE,
    reference_columns,
    sha256_of,
)
from churn_core.contract import CONTRACT_FILE, CustomerBatch, FeatureContract, FloatArray

RECORDED_LIBRARIES = ("scikit-learn", "numpy", "scipy", "joblib", "mlflow", "pyarrow")


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
            name: sha256_of(directory / name)
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
