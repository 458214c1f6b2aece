"""Fixtures shared by every part of the suite: the data, and one trained, registered model artefact.

The model is trained once per session (without the repeated CV, ~8 s) into a temporary ChurnOps home with
its own SQLite registry, so tests never touch the developer's `.churnops/`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from churn_core.contract import FeatureContract
from churn_model.settings import ModelSettings
from tests.support.images import BUILDS
from tests.support.services import REPO


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Container tests last (a stable sort keeps every other order, the fault scenarios' included): their
    images build in the background meanwhile (tests/support/images.py)."""
    items.sort(key=lambda item: item.get_closest_marker("container") is not None)


def pytest_collection_finish(session: pytest.Session) -> None:
    if any(item.get_closest_marker("container") is not None for item in session.items):
        BUILDS.start()


DATA_CANDIDATES = (
    REPO / "data" / "telco-customer-churn.csv",
    REPO.parent / "shared" / "data" / "telco-customer-churn.csv",
)


@pytest.fixture(scope="session")
def telco_csv() -> Path:
    for candidate in DATA_CANDIDATES:
        if candidate.is_file():
            return candidate
    pytest.fail("Telco CSV not found in ./data/ or ../shared/data/ (run `churnops data download`)")


@dataclass(frozen=True)
class TrainedModel:
    """A registered model version, its exported artefact and the settings that reach its registry."""

    settings: ModelSettings
    version: str
    artefact: Path
    contract: FeatureContract
    metrics: dict[str, object]


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory: pytest.TempPathFactory, telco_csv: Path) -> TrainedModel:
    from churn_model.pipeline import train
    from churn_model.training import TrainingConfig

    home = tmp_path_factory.mktemp("churnops-home")
    settings = ModelSettings(home=home, data=telco_csv)
    result = train(settings, TrainingConfig(cv_repeats=0), telco_csv)
    return TrainedModel(
        settings=settings,
        version=result.version,
        artefact=result.artefact,
        contract=FeatureContract.load(result.artefact),
        metrics=result.metrics,
    )


@pytest.fixture(scope="session")
def artefact_dir(trained_model: TrainedModel) -> Path:
    """The exported serving artefact (what KServe's storageUri points at)."""
    return trained_model.artefact


@pytest.fixture(scope="session")
def telco_rows(telco_csv: Path) -> list[dict[str, str]]:
    """Every row of the data set as the CSV spells it (strings), for request-building tests."""
    import csv

    with telco_csv.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(7)
