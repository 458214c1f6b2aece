"""The automated canary, rehearsed on this machine with longer windows than the test (a demo, minutes).

Trains three versions into a scratch ChurnOps home (champion: seed 42; good challenger: seed 7; bad
challenger: shuffled labels), serves each as a local stack, starts a real Prometheus (1 s scrapes) and the
drift detector (every transformer's payload logger posts to it; the customers' real outcomes are fed back
every few seconds, so live F1 per version has labels), sends locust traffic split by the step's share, and
runs `churnops rollout --auto`'s analysis loop (churnops.cluster.canary) three times:
bad challenger, slow challenger (the good model, its MLServer throttled like a CPU quota), good challenger.
Prints each report and a summary: decision, the step it was taken at, time to decide, time to roll back.
The harness is tests/rollout/rehearsal.py (what plays what is explained there).

Usage: .venv/bin/python scripts/canary_rehearsal.py [--dwell 30] [--steps 10,25,50] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO)]

import httpx  # noqa: E402

from churn_model.registry import CHAMPION, HISTORY_TAG, Registry  # noqa: E402
from churn_model.settings import ModelSettings  # noqa: E402
from churnops.cluster.canary.auto import run_auto  # noqa: E402
from churnops.cluster.canary.config import (  # noqa: E402
    AnalysisConfig,
    ModelLimits,
    PerformanceLimits,
    Selectors,
    ServingLimits,
    StepPlan,
)
from churnops.cluster.canary.prometheus import PrometheusSource  # noqa: E402
from churnops.cluster.rollout import Rollouts  # noqa: E402
from churnops.cluster.settings import ClusterSettings  # noqa: E402
from churnops.cluster.state import RolloutState, write_state  # noqa: E402
from churnops.stack import ServingPorts, detector_component, start_component, stop_component  # noqa: E402
from tests.rollout.conftest import shuffled_labels  # noqa: E402
from tests.rollout.rehearsal import (  # noqa: E402
    LoadGenerator,
    Prometheus,
    RehearsalActuator,
    Throttle,
    free_port,
    running,
    scratch_checkout,
    start_stacks,
)
from tests.support.customers import sample_customers  # noqa: E402

URI = "s3://churnops-models/churn-model/{}"


def data_file() -> Path:
    for candidate in (
        REPO / "data" / "telco-customer-churn.csv",
        REPO.parent / "shared" / "data" / "telco-customer-churn.csv",
    ):
        if candidate.is_file():
            return candidate
    sys.exit("Telco CSV not found (churnops data download)")


def train_versions(home: Path, csv_path: Path) -> tuple[ModelSettings, dict[str, Path], str, str, str]:
    from churn_model.pipeline import train
    from churn_model.training import TrainingConfig

    settings = ModelSettings(home=home, data=csv_path)
    started = time.monotonic()
    champion = train(settings, TrainingConfig(cv_repeats=0, seed=42), csv_path)
    good = train(settings, TrainingConfig(cv_repeats=0, seed=7), csv_path)
    bad = train(
        settings, TrainingConfig(cv_repeats=0, seed=7), shuffled_labels(csv_path, home / "shuffled.csv")
    )
    print(
        f"trained versions {champion.version}, {good.version}, {bad.version} in {time.monotonic() - started:.0f} s"
    )
    artefacts = {r.version: r.artefact for r in (champion, good, bad)}
    return settings, artefacts, champion.version, good.version, bad.version


class Feedback:
    """Posts the real outcome of every customer of the pool to the detector every `every_s` seconds."""

    def __init__(self, detector: str, labels: list[dict[str, object]], every_s: float = 5.0) -> None:
        self.detector, self.labels, self.every_s = detector, labels, every_s
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self._done.wait(self.every_s):
                try:
                    client.post(f"{self.detector}/feedback", json=self.labels)
                except httpx.HTTPError:
                    continue

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


def rehearsal_config(dwell: float, steps: tuple[int, ...]) -> AnalysisConfig:
    return AnalysisConfig(
        plan=StepPlan(steps=steps, dwell_s=dwell, warmup_s=2, settle_s=2.5, max_extensions=1),
        selectors=Selectors(
            serving='job="rehearsal-v{version}"', performance='job="detector", model_version="{version}"'
        ),
        serving=ServingLimits(min_requests=50, min_latency_increase_s=0.03),
        model=ModelLimits(min_predictions=300),
        performance=PerformanceLimits(min_labelled=100),
    )


def customers_and_labels(csv_path: Path) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    import csv

    with csv_path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    customers = sample_customers(rows, 3000, seed=5)
    outcomes = {row["customerID"]: row["Churn"] == "Yes" for row in rows}
    labels = [{"customer_id": c["customerID"], "churned": outcomes[str(c["customerID"])]} for c in customers]
    return customers, labels


def scenario(
    name: str,
    version: str,
    *,
    throttled: bool,
    settings: ModelSettings,
    cluster: ClusterSettings,
    champion: str,
    stacks: dict,
    load: LoadGenerator,
    prometheus: Prometheus,
    config: AnalysisConfig,
    out: Path,
) -> tuple:
    """One automated canary from the champion at 100 %: returns the summary row."""
    registry = Registry(settings)
    write_state(cluster.overlays_dir / "prod", RolloutState.stable(champion, URI.format(champion)))
    registry.client.set_registered_model_alias(registry.name, CHAMPION, champion)
    registry.client.set_registered_model_tag(registry.name, HISTORY_TAG, json.dumps([champion]))
    load.set_split(None, 0)
    rollouts = Rollouts(cluster, registry, "prod")
    actuator = RehearsalActuator(rollouts, version, load, stacks[version])
    throttle = Throttle(stacks[version].predictor.process.pid, run_ms=5, period_ms=100) if throttled else None
    if throttle is not None:
        throttle.__enter__()
    try:
        result = run_auto(
            rollouts,
            version,
            config,
            PrometheusSource(prometheus.url),
            actuator=actuator,
            reports_dir=out,
            log=lambda line: print(f"[{time.strftime('%H:%M:%S')}] {name}: {line}"),
        )
    finally:
        if throttle is not None:
            throttle.__exit__()
    outcome = result.outcome
    print(result.report.read_text())
    decided = (outcome.decided_at or outcome.finished_at) - outcome.started_at
    return (name, version, outcome.decision, len(outcome.steps), decided, outcome.rollback_s, result.report)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dwell", type=float, default=30.0, help="seconds per step window")
    parser.add_argument("--steps", default="10,25,50", help="canary percentages")
    parser.add_argument(
        "--out", type=Path, default=REPO / "reports" / "canary-rehearsal", help="reports here"
    )
    args = parser.parse_args()
    config = rehearsal_config(args.dwell, tuple(int(p) for p in args.steps.split(",")))
    prometheus_binary = shutil.which("prometheus")
    if prometheus_binary is None:
        sys.exit("prometheus not installed (make system-tools)")
    csv_path = data_file()
    customers, labels = customers_and_labels(csv_path)
    args.out.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory(prefix="churnops-canary-rehearsal-") as scratch:
        work = Path(scratch)
        settings, artefacts, champion, good, bad = train_versions(work / "home", csv_path)
        cluster = ClusterSettings(project_dir=scratch_checkout(work / "checkout"), reports_dir=args.out)
        ports = ServingPorts(detector=free_port())
        detector = start_component(
            detector_component(
                artefacts[champion],
                ports,
                python=REPO / ".venv-drift" / "bin" / "python",
                home=work / "detector",
            )
            .with_env(CHURNOPS_DETECTOR_PERFORMANCE_INTERVAL_SECONDS="2", CHURNOPS_DETECTOR_WINDOW_SIZE="500")
            .logging_to(work / "detector.log"),
            log=lambda _: None,
        )
        detector_url = f"http://127.0.0.1:{ports.detector}"
        try:
            started = time.monotonic()
            stacks = start_stacks(
                artefacts,
                REPO / ".venv-predictor" / "bin" / "python",
                work,
                payload_logger_url=f"{detector_url}/",
            )
            prometheus = Prometheus(
                work, list(stacks.values()), extra={"detector": f"127.0.0.1:{ports.detector}"}
            )
            load = LoadGenerator(work, stacks[champion], customers)
            feedback = Feedback(detector_url, labels)
            with running(*stacks.values(), prometheus, load, feedback):
                prometheus.start(prometheus_binary)
                load.start(users=4, rate=10, batch=10)
                feedback.start()
                print(
                    f"stacks, detector and Prometheus up in {time.monotonic() - started:.0f} s; warming up labels"
                )
                time.sleep(20)
                common = {
                    "settings": settings,
                    "cluster": cluster,
                    "champion": champion,
                    "stacks": stacks,
                    "load": load,
                    "prometheus": prometheus,
                    "config": config,
                    "out": args.out,
                }
                summary = [
                    scenario("bad", bad, throttled=False, **common),
                    scenario("slow", good, throttled=True, **common),
                    scenario("good", good, throttled=False, **common),
                ]
                print(load.stop())
        finally:
            stop_component(detector)

    print("\nscenario  version  decision  steps  decided after  rollback live after  report")
    for name, version, decision, count, decided, rollback, report in summary:
        rollback_text = f"{rollback:.2f} s" if rollback is not None else "-"
        print(
            f"{name:8}  {version:7}  {decision:8}  {count:5}  {decided:11.1f} s  {rollback_text:>19}  {report.name}"
        )


if __name__ == "__main__":
    main()
