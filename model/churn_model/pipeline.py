"""`churnops train`: data → fitted, evaluated, explained model → MLflow run → registered version → artefact."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from sklearn.model_selection import train_test_split

from churn_core.artefact import verify_artefact
from churn_core.contract import CustomerBatch, Encoder, FeatureContract, telco_contract
from churn_core.data import CustomerReader, file_sha256, resolve_data_path
from churn_model.effects import permutation_importance, reason_code_tables
from churn_model.evaluation import SCALAR_METRICS, classification_metrics
from churn_model.packaging import TrainingRecord, write_artefact
from churn_model.registry import SERVING_ARTIFACT_PATH, Registry
from churn_model.settings import ModelSettings
from churn_model.training import TrainingConfig, cross_validate, fit_model, predict_churn

BACKGROUND_ROWS = 1000
# scikit-learn internals of our own model that skops (MLflow's safe serialisation) asks us to vouch for.
SKOPS_TRUSTED_TYPES = (
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._TemperatureScaling",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.model_selection._split.StratifiedKFold",
    "sklearn.utils._bunch.Bunch",
)


class Progress(Protocol):
    """What the pipeline reports to (a rich progress bar in the CLI, nothing in tests)."""

    def step(self, description: str, total: int | None = None) -> None: ...

    def advance(self) -> None: ...


class _Silent:
    def step(self, description: str, total: int | None = None) -> None:
        return None

    def advance(self) -> None:
        return None


@dataclass(frozen=True)
class TrainResult:
    version: str
    run_id: str
    artefact: Path
    metrics: dict[str, Any]
    became_champion: bool


def _subset(batch: CustomerBatch, rows: np.ndarray) -> CustomerBatch:
    return CustomerBatch(categories=batch.categories[rows], numbers=batch.numbers[rows])


def _flat_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """MLflow metrics: `test_f1`, `cv_roc_auc_mean`, ... (scalars only)."""
    flat: dict[str, float] = {}
    for split in ("test", "validation"):
        for name in SCALAR_METRICS:
            flat[f"{split}_{name}"] = float(metrics[split][name])
    if "cv" in metrics:
        for name, stats in metrics["cv"]["summary"].items():
            flat[f"cv_{name}_mean"] = stats["mean"]
            flat[f"cv_{name}_std"] = stats["std"]
        flat["cv_calibration_error_pooled"] = metrics["cv"]["calibration_error_pooled"]
    flat["train_seconds"] = 0.0
    return flat


@contextmanager
def _mlflow_run(registry: Registry, params: dict[str, Any]) -> Iterator[str]:
    import mlflow

    experiment_id = registry.ensure_experiment()
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.log_params(params)
        yield run.info.run_id


def train(
    settings: ModelSettings,
    config: TrainingConfig,
    data: Path | None = None,
    progress: Progress | None = None,
) -> TrainResult:
    """Train, evaluate, explain, log, register and export one model version."""
    import time

    started = time.perf_counter()
    report = progress or _Silent()
    report.step("reading and validating data")
    path = resolve_data_path(data, settings)
    contract = telco_contract()
    customers = CustomerReader(contract, require_target=True).read_all(path)
    assert customers.churned is not None
    churned = customers.churned
    features = Encoder(contract).encode(customers.batch)
    rows = np.arange(len(customers.batch))
    development, test = train_test_split(
        rows, test_size=config.test_size, stratify=churned, random_state=config.seed
    )

    report.step("fitting the calibrated ensemble")
    fitted = fit_model(features[development], churned[development], config)
    test_probabilities = predict_churn(fitted.model, features[test])
    metrics: dict[str, Any] = {
        "test": classification_metrics(churned[test], test_probabilities, fitted.threshold),
        "validation": classification_metrics(
            churned[development], fitted.validation_probabilities, fitted.threshold
        ),
        "threshold": {
            "value": fitted.threshold,
            "objective": config.objective,
            "score": fitted.objective_score,
            "economics": asdict(config.economics) if config.economics else None,
        },
    }

    if config.cv_repeats > 0:
        report.step(
            f"repeated stratified {config.cv_folds}-fold CV x{config.cv_repeats}",
            total=config.cv_folds * config.cv_repeats,
        )
        cv = cross_validate(features, churned, config, on_fold=report.advance)
        metrics["cv"] = {
            "folds": config.cv_folds,
            "repeats": config.cv_repeats,
            "summary": cv.summary,
            "calibration_error_pooled": cv.pooled_calibration_error,
        }

    report.step("reason codes and feature importance")

    def predict(rows_: np.ndarray) -> np.ndarray:
        return predict_churn(fitted.model, rows_)

    rng = np.random.default_rng(config.seed)
    background = _subset(
        customers.batch, rng.choice(development, size=min(BACKGROUND_ROWS, len(development)), replace=False)
    )
    contract = contract.model_copy(update={"effects": reason_code_tables(contract, predict, background)})
    metrics["feature_importance"] = permutation_importance(
        contract, predict, _subset(customers.batch, test), churned[test], config.seed
    )
    contract = contract.with_model(threshold=fitted.threshold, threshold_objective=config.objective)

    report.step("logging to MLflow and registering")
    registry = Registry(settings)
    result = _log_and_register(
        registry,
        contract=contract,
        fitted_model=fitted.model,
        metrics=metrics,
        config=config,
        record_args={
            "data_file": path.name,
            "data_sha256": file_sha256(path),
            "rows": len(rows),
            "churn_rate": float(churned.mean()),
        },
        reference=_subset(customers.batch, development),
        reference_probabilities=predict(features[development]),
        test_churned=churned[test],
        test_probabilities=test_probabilities,
        started=started,
    )
    return result


def _log_and_register(
    registry: Registry,
    *,
    contract: FeatureContract,
    fitted_model: Any,
    metrics: dict[str, Any],
    config: TrainingConfig,
    record_args: dict[str, Any],
    reference: CustomerBatch,
    reference_probabilities: np.ndarray,
    test_churned: np.ndarray,
    test_probabilities: np.ndarray,
    started: float,
) -> TrainResult:
    import time

    import mlflow
    import sklearn

    params = {
        **{k: v for k, v in asdict(config).items() if k != "economics"},
        **({f"economics_{k}": v for k, v in asdict(config.economics).items()} if config.economics else {}),
        "data_sha256": record_args["data_sha256"],
    }
    with _mlflow_run(registry, params) as run_id:
        flat = _flat_metrics(metrics)
        model_info = mlflow.sklearn.log_model(
            fitted_model,
            name="model",
            pip_requirements=[f"scikit-learn=={sklearn.__version__}", f"numpy=={np.__version__}"],
            serialization_format="skops",
            skops_trusted_types=list(SKOPS_TRUSTED_TYPES),
        )
        version = registry.register(model_info.model_uri, run_id)
        stamped = contract.with_model(version=version, run_id=run_id)
        flat["train_seconds"] = time.perf_counter() - started
        mlflow.log_metrics(flat)
        metrics["train_seconds"] = flat["train_seconds"]
        with tempfile.TemporaryDirectory(prefix="churnops-artefact-") as scratch:
            directory = write_artefact(
                Path(scratch) / SERVING_ARTIFACT_PATH,
                model=fitted_model,
                contract=stamped,
                record=TrainingRecord(config=params, metrics=metrics, **record_args),
                reference=reference,
                reference_probabilities=reference_probabilities,
                test_churned=test_churned,
                test_probabilities=test_probabilities,
            )
            mlflow.log_artifacts(str(directory), SERVING_ARTIFACT_PATH)
    info = registry.resolve(version)
    exported = export_version(registry, version)
    return TrainResult(
        version=version,
        run_id=run_id,
        artefact=exported,
        metrics=metrics,
        became_champion="champion" in info.aliases,
    )


def export_version(registry: Registry, version: str, destination: Path | None = None) -> Path:
    """Download a registered version's serving artefact, verify it against its manifest, and put it at
    `destination`: a new or empty directory, or an older artefact, which is replaced. Anything else is
    refused before a byte is downloaded (churn_model.export_target)."""
    from churn_model.export_target import existing_artefact, replace_with

    info = registry.resolve(version)
    target = destination or registry.settings.models_dir / info.version
    old_files = existing_artefact(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Downloaded and verified beside the target (same file system), then moved into place in one rename.
    with tempfile.TemporaryDirectory(prefix=f".{target.name}.export-", dir=target.parent) as scratch:
        fresh = Path(scratch) / "artefact"
        registry.download_serving(info, fresh)
        verify_artefact(fresh)
        replace_with(fresh, target, old_files)
    return target
