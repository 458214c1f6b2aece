"""Challengers for the rollout rehearsal: a registry copy holding the session's version 1 (champion), a good
version 2 (retrained with another seed) and a bad version 3 (trained on shuffled labels)."""

from __future__ import annotations

import csv
import random
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from churn_model.settings import ModelSettings


@contextmanager
def mlflow_uris_kept() -> Iterator[None]:
    """Registry() points MLflow's process-wide URIs at its store: give them back afterwards."""
    import mlflow

    tracking, registry = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    try:
        yield
    finally:
        mlflow.set_tracking_uri(tracking)
        mlflow.set_registry_uri(registry)


def shuffled_labels(source: Path, destination: Path, seed: int = 3) -> Path:
    """The CSV with its Churn column permuted: a model trained on it has learnt nothing real."""
    with source.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    labels = [row["Churn"] for row in rows]
    random.Random(seed).shuffle(labels)
    with destination.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        for row, label in zip(rows, labels, strict=True):
            writer.writerow({**row, "Churn": label})
    return destination


@dataclass(frozen=True)
class Challengers:
    settings: ModelSettings
    artefacts: dict[str, Path]  # version -> exported artefact
    good: str
    bad: str


@pytest.fixture(scope="session")
def challengers(trained_model, telco_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> Challengers:
    from churn_model.pipeline import train
    from churn_model.training import TrainingConfig

    home = tmp_path_factory.mktemp("rollout-registry")
    shutil.copytree(trained_model.settings.home, home, dirs_exist_ok=True)
    settings = ModelSettings(home=home, data=telco_csv)
    shuffled = shuffled_labels(telco_csv, tmp_path_factory.mktemp("shuffled") / "telco-shuffled.csv")
    # No repeated CV and three calibration folds instead of five: a real retrain, at about half the fits.
    config = TrainingConfig(cv_repeats=0, calibration_folds=3, seed=7)
    started = time.monotonic()
    with mlflow_uris_kept():
        good = train(settings, config, telco_csv)
        bad = train(settings, config, shuffled)
    print(
        f"challengers: versions {good.version} and {bad.version} trained in {time.monotonic() - started:.1f} s"
    )
    return Challengers(
        settings,
        {
            trained_model.version: trained_model.artefact,
            good.version: good.artefact,
            bad.version: bad.artefact,
        },
        good.version,
        bad.version,
    )
