"""Reading and verifying the serving artefact: the directory a KServe InferenceService's `storageUri` points at.

Both halves of the InferenceService load the same directory, so they cannot disagree on the model:
- the predictor (MLServer's sklearn runtime) reads `model-settings.json` and `model.joblib`;
- the transformer reads `churn-contract.json` (fields, encoding, threshold, risk bands, reason codes,
  model version) and checks at start that the predictor reports the same version;
- the drift detector reads `reference.json.gz` (the training sample it compares live traffic with).
`manifest.json` records data fingerprint, library versions and a checksum of every file. Training writes
the directory (`churn_model.packaging`); every runtime reads it through this module.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from churn_core.contract import CustomerBatch, FeatureContract

MODEL_FILE = "model.joblib"
MODEL_SETTINGS_FILE = "model-settings.json"
METRICS_FILE = "metrics.json"
REFERENCE_FILE = "reference.json.gz"
TEST_PREDICTIONS_FILE = "test-predictions.json"
MANIFEST_FILE = "manifest.json"
SERVING_NAME = "churn"


class ArtefactError(RuntimeError):
    """An artefact directory that is incomplete or was changed after it was written."""


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def reference_columns(contract: FeatureContract, batch: CustomerBatch) -> dict[str, list[Any]]:
    """Raw field values of a batch, JSON-ready (category strings, numbers as floats)."""
    columns: dict[str, list[Any]] = {}
    for index, spec in enumerate(contract.category_fields):
        values = np.asarray(spec.values, dtype=object)
        columns[spec.name] = values[batch.categories[:, index]].tolist()
    for index, number_spec in enumerate(contract.number_fields):
        columns[number_spec.name] = batch.numbers[:, index].tolist()
    return {name: columns[name] for name in contract.field_names}


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
        if sha256_of(path) != expected:
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
