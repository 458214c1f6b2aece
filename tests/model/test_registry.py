"""The MLflow registry as ChurnOps uses it: aliases, promotion history, rollback, reproducible export."""

from __future__ import annotations

import hashlib
import uuid

import pytest

from churn_core.artefact import ArtefactError, verify_artefact
from churn_model.pipeline import export_version
from churn_model.registry import CHALLENGER, CHAMPION, Registry, RegistryError
from churn_model.settings import ModelSettings


def _digests(directory):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


@pytest.fixture
def registry(trained_model) -> Registry:
    """A registered model of its own per test, holding the session model's run three times as versions."""
    settings = ModelSettings(
        home=trained_model.settings.home,
        data=trained_model.settings.data,
        registered_name=f"churn-test-{uuid.uuid4().hex[:8]}",
    )
    own = Registry(settings)
    run_id = Registry(trained_model.settings).resolve(trained_model.version).run_id
    for _ in range(3):
        own.register(f"runs:/{run_id}/model", run_id)
    return own


def test_first_version_is_champion_and_later_ones_challenger(registry):
    assert registry.resolve(CHAMPION).version == "1"
    assert registry.resolve(CHALLENGER).version == "3"
    assert registry.history() == ["1"]


def test_promote_moves_champion_and_clears_challenger(registry):
    previous = registry.promote("3")
    assert previous == "1"
    assert registry.resolve(CHAMPION).version == "3"
    assert registry.alias_target(CHALLENGER) is None
    assert registry.history() == ["1", "3"]


def test_rollback_returns_to_the_previous_champion(registry):
    registry.promote("2")
    registry.promote("3")
    assert registry.rollback() == ("3", "2")
    assert registry.resolve(CHAMPION).version == "2"
    assert registry.rollback() == ("2", "1")
    with pytest.raises(RegistryError, match="no earlier champion"):
        registry.rollback()


def test_unknown_version_is_a_clear_error(registry):
    with pytest.raises(RegistryError, match="no version or alias '42'"):
        registry.resolve("42")


def test_export_reproduces_the_artefact_byte_for_byte(trained_model, tmp_path):
    registry = Registry(trained_model.settings)
    exported = export_version(registry, trained_model.version, tmp_path / "export")
    assert _digests(exported) == _digests(trained_model.artefact)
    manifest = verify_artefact(exported)
    assert manifest["model"]["version"] == trained_model.version
    assert manifest["libraries"]["scikit-learn"]


def test_tampered_artefact_fails_verification(trained_model, tmp_path):
    exported = export_version(Registry(trained_model.settings), trained_model.version, tmp_path / "export")
    (exported / "churn-contract.json").write_text("{}")
    with pytest.raises(ArtefactError, match="checksum"):
        verify_artefact(exported)
