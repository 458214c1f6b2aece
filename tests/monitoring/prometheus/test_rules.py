"""The PrometheusRule (checked and unit-tested with promtool), the scrape targets and the Grafana dashboard
ConfigMap: strictly valid against the Prometheus operator's CRDs, and what kustomize renders."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.services import REPO, unavailable

MONITORING = REPO / "monitoring"
RULES = MONITORING / "prometheus" / "rules.yaml"
RULE_TESTS = MONITORING / "prometheus" / "rules-test.yaml"
SCHEMAS = REPO.parent / "shared" / "schemas" / "prometheus-operator"


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        unavailable("promtool is not installed (Debian package prometheus)")
    assert path is not None
    return path


def rule_groups_file(directory: Path) -> Path:
    """spec.groups of the PrometheusRule as a plain rule file: the manifest stays the single source."""
    document = yaml.safe_load(RULES.read_text())
    path = directory / "churn-rules.yml"
    path.write_text(yaml.safe_dump({"groups": document["spec"]["groups"]}, sort_keys=False))
    return path


def rendered() -> list[dict]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        unavailable("kubectl is not installed (kustomize)")
    result = subprocess.run(
        [kubectl, "kustomize", str(MONITORING)], capture_output=True, text=True, timeout=60, check=True
    )
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def test_rules_pass_promtool_check(tmp_path):
    result = subprocess.run(
        [promtool(), "check", "rules", str(rule_groups_file(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 12 rules found" in result.stdout


def test_rule_unit_tests_pass(tmp_path):
    rule_groups_file(tmp_path)
    shutil.copy(RULE_TESTS, tmp_path / "rules-test.yaml")
    result = subprocess.run(
        [promtool(), "test", "rules", "rules-test.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_rule_unit_tests_fail_when_a_threshold_changes(tmp_path):
    """The unit tests can fail: raising the latency objective to 250 ms breaks the p95 case."""
    document = yaml.safe_load(RULES.read_text())
    for group in document["spec"]["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == "ChurnLatencyP95High":
                rule["expr"] = rule["expr"].replace("> 0.1", "> 0.25")
    (tmp_path / "churn-rules.yml").write_text(yaml.safe_dump({"groups": document["spec"]["groups"]}))
    shutil.copy(RULE_TESTS, tmp_path / "rules-test.yaml")
    result = subprocess.run(
        [promtool(), "test", "rules", "rules-test.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0
    assert "ChurnLatencyP95High" in result.stdout + result.stderr


def test_every_alert_of_the_issue_exists():
    alerts = {
        rule["alert"]
        for group in yaml.safe_load(RULES.read_text())["spec"]["groups"]
        for rule in group["rules"]
    }
    assert {
        "ChurnDetectorDown",
        "ChurnServing5xxRatioHigh",
        "ChurnLatencyP95High",
        "ChurnModelF1Low",
        "ChurnFeatureDrift",
        "ChurnPredictionStoreBacklog",
    } <= alerts


def test_kustomize_renders_rules_monitors_and_dashboard_configmap():
    documents = rendered()
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in documents)
    assert kinds == [
        ("ConfigMap", "churn-grafana-dashboard"),
        ("PodMonitor", "churn-predictor"),
        ("PodMonitor", "churn-transformer"),
        ("PrometheusRule", "churn-monitoring"),
        ("ServiceMonitor", "churn-detector"),
    ]
    config_map = next(d for d in documents if d["kind"] == "ConfigMap")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(config_map["data"]["churn-overview.json"])
    assert dashboard["uid"] == "churnops-overview"
    assert dashboard == json.loads((MONITORING / "grafana" / "churn-overview.json").read_text())


def test_custom_resources_validate_strictly_against_the_operator_crds():
    if not SCHEMAS.is_dir():
        unavailable(f"{SCHEMAS} is missing")
    from churnops.cluster.schemas import load_crd_schemas
    from churnops.cluster.validate import validate_custom_resource

    crds = load_crd_schemas(SCHEMAS)
    documents = [d for d in rendered() if d["apiVersion"].startswith("monitoring.coreos.com/")]
    assert len(documents) == 4
    for document in documents:
        assert validate_custom_resource(document, crds) == [], document["metadata"]["name"]


def test_strict_validation_catches_a_misspelt_field():
    if not SCHEMAS.is_dir():
        unavailable(f"{SCHEMAS} is missing")
    from churnops.cluster.schemas import load_crd_schemas
    from churnops.cluster.validate import validate_custom_resource

    crds = load_crd_schemas(SCHEMAS)
    monitor = next(d for d in rendered() if d["kind"] == "PodMonitor")
    monitor["spec"]["podMetricsEndpoints"][0]["portNumbr"] = 8080
    assert validate_custom_resource(monitor, crds) != []


@pytest.mark.parametrize("panel_type", ["timeseries", "piechart", "bargauge", "stat"])
def test_dashboard_panels_have_queries(panel_type):
    dashboard = json.loads((MONITORING / "grafana" / "churn-overview.json").read_text())
    panels = [p for p in dashboard["panels"] if p["type"] == panel_type]
    assert panels
    for panel in panels:
        assert panel["targets"]
        assert all(t["expr"].strip() for t in panel["targets"])
        assert panel["datasource"]["uid"] == "${datasource}"
