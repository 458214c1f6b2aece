"""Every query of the Grafana dashboard, and every rule expression, against a REAL Prometheus scraping the
real local stack under a little traffic: MLServer (predictor), the transformer (its payload logger posting
to the detector, as KServe's agent would) and the drift detector. No Grafana server can run here, so the
panels are checked the way Grafana would run them: PromQL against Prometheus, which must parse and return
data."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable

import httpx
import pytest
import yaml

from churnops.stack import ServingPorts, StackError, predictor_component, start_component, stop_component
from tests.monitoring.detector_support import start_detector
from tests.support.customers import sample_customers
from tests.support.services import REPO, free_port, predictor_python, unavailable, wait_until
from tests.transformer.conftest import start_transformer

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DASHBOARD = REPO / "monitoring" / "grafana" / "churn-overview.json"
RULES = REPO / "monitoring" / "prometheus" / "rules.yaml"


def prometheus_binary() -> str:
    path = shutil.which("prometheus")
    if path is None:
        unavailable("prometheus is not installed (Debian package prometheus)")
    assert path is not None
    return path


@pytest.fixture(scope="module")
def stack(artefact_dir, trained_model, tmp_path_factory, telco_rows):
    """Predictor, detector, transformer (payload logger -> detector) and Prometheus scraping all three."""
    work = tmp_path_factory.mktemp("dashboard")
    python = predictor_python()
    if not (python.parent / "mlserver").exists():
        unavailable(f"mlserver is not installed next to {python}")
    started = []
    ports = ServingPorts(
        predictor_http=free_port(), predictor_grpc=free_port(), predictor_metrics=free_port()
    )
    detector = start_detector(
        {
            "CHURNOPS_DETECTOR_HOME": str(work / "home"),
            "CHURNOPS_DETECTOR_MODEL_DIR": str(artefact_dir),
            "CHURNOPS_DETECTOR_DRIFT_BACKEND": "scipy",
            "CHURNOPS_DETECTOR_WINDOW_SIZE": "50",
            "CHURNOPS_DETECTOR_WINDOW_MIN_SIZE": "10",
            "CHURNOPS_DETECTOR_PERFORMANCE_INTERVAL_SECONDS": "2",
        },
        work / "detector.log",
    )
    prometheus = None
    try:
        predictor = start_component(
            predictor_component(artefact_dir, python, ports, trained_model.version).logging_to(
                work / "mlserver.log"
            ),
            log=lambda _: None,
        )
        started.append(predictor)
        transformer = start_transformer(
            artefact_dir,
            ports.predictor_grpc,
            work / "transformer.log",
            workers=2,  # as the transformer tests' shared fixture: /metrics must add up both workers
            env={"CHURNOPS_TRANSFORMER_PAYLOAD_LOGGER_URL": f"{detector.url}/"},
        )
        started.append(transformer.running)
        prometheus_port = free_port()
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(work / "churn-rules.yml")],
            "scrape_configs": [
                # Job names as the operator derives them: ServiceMonitor -> Service name,
                # PodMonitor -> namespace/name.
                {
                    "job_name": "churn-detector",
                    "static_configs": [{"targets": [f"127.0.0.1:{detector.port}"]}],
                },
                {
                    "job_name": "churn/churn-transformer",
                    "static_configs": [{"targets": [f"127.0.0.1:{transformer.port}"]}],
                },
                {
                    "job_name": "churn/churn-predictor",
                    "static_configs": [{"targets": [f"127.0.0.1:{ports.predictor_metrics}"]}],
                },
            ],
        }
        (work / "churn-rules.yml").write_text(
            yaml.safe_dump({"groups": yaml.safe_load(RULES.read_text())["spec"]["groups"]})
        )
        (work / "prometheus.yml").write_text(yaml.safe_dump(config))
        prometheus = subprocess.Popen(
            [
                prometheus_binary(),
                f"--config.file={work / 'prometheus.yml'}",
                f"--storage.tsdb.path={work / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prometheus_port}",
                "--log.level=warn",
            ],
            stdout=(work / "prometheus.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{prometheus_port}"
        wait_until(lambda: _ready(base), 60, "prometheus")
        # Traffic only once every target has been scraped: Prometheus applies new targets every few
        # seconds, and a counter first scraped after the traffic shows no increase to rate() (the ratios
        # would be 0/0).
        try:
            wait_until(lambda: _all_up(base), 30, "three scrape targets up")
        except TimeoutError:
            targets = httpx.get(f"{base}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
            pytest.fail(
                f"scrape targets not all up: {[(t['scrapePool'], t['health'], t['lastError']) for t in targets]}"
            )
        _traffic(transformer.url, detector.url, telco_rows)
        yield base
    except StackError as error:
        pytest.fail(f"stack did not start: {error}")
    finally:
        if prometheus is not None:
            prometheus.terminate()
            try:
                prometheus.wait(timeout=20)
            except subprocess.TimeoutExpired:
                prometheus.kill()
        for running in reversed(started):
            stop_component(running)
        detector.stop()


def _ready(base: str) -> bool:
    try:
        return httpx.get(f"{base}/-/ready", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _all_up(base: str) -> bool:
    result = httpx.get(f"{base}/api/v1/query", params={"query": "up"}, timeout=5).json()["data"]["result"]
    return len(result) == 3 and all(r["value"][1] == "1" for r in result)


def _traffic(transformer: str, detector: str, telco_rows) -> None:
    """A little of everything: scored customers (enough for windows), a refused request, labels. No 5xx:
    the transformer's 5xx ratio must still return a series (its counter starts at 0)."""
    customers = sample_customers(telco_rows, 200, seed=21)
    with httpx.Client(timeout=30) as client:
        for start in range(0, len(customers), 5):
            response = client.post(
                f"{transformer}/v1/models/churn:predict", json={"instances": customers[start : start + 5]}
            )
            assert response.status_code == 200, response.text
        refused = client.post(
            f"{transformer}/v1/models/churn:predict",
            json={"instances": [{**customers[0], "Contract": "Weekly"}]},
        )
        assert refused.status_code == 400
        wait_until(
            lambda: (
                client.get(f"{detector}/readyz").json()["store"]["backlog_rows"] == 0
                and _detector_metric(client, detector, 'churn_drift_windows_total{outcome="no_drift"}')
                + _detector_metric(client, detector, 'churn_drift_windows_total{outcome="drift"}')
                >= 3
            ),
            60,
            "windows tested and rows stored",
        )
        labels = [{"customer_id": c["customerID"], "churned": i % 3 == 0} for i, c in enumerate(customers)]
        assert client.post(f"{detector}/feedback", json=labels).json()["matched"] == len(
            {c["customerID"] for c in customers}
        )
    time.sleep(5)  # a few scrapes of the final state


def _detector_metric(client: httpx.Client, detector: str, sample: str) -> float:
    for line in client.get(f"{detector}/metrics").text.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def dashboard_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        (f"{panel['title']} [{target['refId']}]", target["expr"])
        for panel in dashboard["panels"]
        for target in panel["targets"]
    ]


def rule_expressions() -> list[tuple[str, str]]:
    groups = yaml.safe_load(RULES.read_text())["spec"]["groups"]
    return [
        (rule.get("alert") or rule["record"], rule["expr"]) for group in groups for rule in group["rules"]
    ]


def query(base: str, expr: str) -> dict:
    response = httpx.get(f"{base}/api/v1/query", params={"query": expr}, timeout=10)
    body = response.json()
    assert response.status_code == 200, body
    assert body["status"] == "success", body
    return body["data"]


def query_until(
    base: str, expr: str, settled: Callable[[list[dict]], bool], timeout_s: float = 30
) -> list[dict]:
    """The query's result once `settled` accepts it, or the last one after `timeout_s`. rate() needs two
    samples of a series inside its range, and on a loaded machine a scrape can miss its 1 s deadline."""
    deadline = time.monotonic() + timeout_s
    result: list[dict] = query(base, expr)["result"]
    while not settled(result) and time.monotonic() < deadline:
        time.sleep(1)
        result = query(base, expr)["result"]
    return result


@pytest.mark.parametrize(("panel", "expr"), dashboard_queries(), ids=[p for p, _ in dashboard_queries()])
def test_dashboard_query_parses_and_returns_data(stack, panel, expr):
    assert query_until(stack, expr, bool), f"{panel}: no data for {expr}"


@pytest.mark.parametrize(("alert", "expr"), rule_expressions(), ids=[a for a, _ in rule_expressions()])
def test_rule_expression_parses_against_live_series(stack, alert, expr):
    """Rules fire only on failures, so their expressions must parse here; promtool tests what they say."""
    assert query(stack, expr)["resultType"] == "vector"


def test_transformer_answers_are_counted_by_status_class_and_the_5xx_ratio_is_zero(stack):
    """The traffic: 40 scored requests and one refused, no server error. The alert's ratio is a series at
    0 (not an empty result), and the refusal is a 4xx, not a 5xx."""
    counts = {
        r["metric"]["code"]: float(r["value"][1])
        for r in query(stack, "sum by (code) (churn_inference_responses_total)")["result"]
    }
    assert counts == {"2xx": 40.0, "4xx": 1.0, "5xx": 0.0}
    expr = (
        'sum(rate(churn_inference_responses_total{code="5xx"}[5m]))'
        " / sum(rate(churn_inference_responses_total[5m]))"
    )

    def ratio(result: list[dict]) -> list[float]:
        return [float(r["value"][1]) for r in result]

    assert ratio(query_until(stack, expr, lambda result: ratio(result) == [0.0])) == [0.0], expr


def test_prometheus_loaded_every_rule(stack):
    groups = httpx.get(f"{stack}/api/v1/rules", timeout=10).json()["data"]["groups"]
    loaded = {rule["name"] for group in groups for rule in group["rules"]}
    assert loaded == {name for name, _ in rule_expressions()}
    assert all(rule["health"] == "ok" for group in groups for rule in group["rules"])
