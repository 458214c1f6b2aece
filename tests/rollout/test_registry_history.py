"""What rollouts record on a version in the registry: canary steps and decisions (bounded), the shadow
evaluation, the canary report, and the digest a rollout pins."""

from __future__ import annotations

import hashlib
import json
import shutil

from churn_model.registry import ROLLOUT_HISTORY_MAX_BYTES, ROLLOUT_HISTORY_TAG, Registry
from churn_model.settings import ModelSettings
from tests.rollout.conftest import mlflow_uris_kept


def test_rollout_history_keeps_the_newest_events_within_its_bound(trained_model, tmp_path):
    home = tmp_path / "home"
    shutil.copytree(trained_model.settings.home, home)
    with mlflow_uris_kept():
        registry = Registry(ModelSettings(home=home))
        version = trained_model.version
        assert registry.rollout_history(version) == []
        for step in range(200):
            registry.record_rollout_event(version, {"kind": "canary-step", "step": step, "detail": "x" * 600})
        events = registry.rollout_history(version)
        raw = registry.client.get_model_version(registry.name, version).tags[ROLLOUT_HISTORY_TAG]
        assert len(raw.encode()) <= ROLLOUT_HISTORY_MAX_BYTES
        assert events[-1]["step"] == 199  # the newest kept...
        assert 50 < len(events) < 200  # ...the oldest dropped
        assert [e["step"] for e in events] == list(range(200 - len(events), 200))

        registry.record_evaluation(version, {"against": "1", "customers": 10})
        assert registry.evaluation(version) == {"against": "1", "customers": 10}

        report = tmp_path / "canary-prod-v1.md"
        report.write_text("# Canary\n")
        registry.log_rollout_report(version, report)
        run = registry.resolve(version).run_id
        assert "rollouts/canary-prod-v1.md" in [
            a.path for a in registry.client.list_artifacts(run, "rollouts")
        ]

        digest = hashlib.sha256((trained_model.artefact / "manifest.json").read_bytes()).hexdigest()
        assert registry.artefact_sha256(version) == digest
        assert json.loads(raw)[0]["kind"] == "canary-step"
