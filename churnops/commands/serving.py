"""`churnops serve` (the local stack) and `churnops transformer` (the transformer process alone)."""

from __future__ import annotations

from typing import Annotated

import typer

app = typer.Typer()

CURL_V1 = """curl -s -X POST http://127.0.0.1:{port}/v1/models/churn:predict -H 'content-type: application/json' \\
  -d '{{"instances": [{{"customerID": "7590-VHVEG", "gender": "Female", "SeniorCitizen": 0, "Partner": "Yes",
       "Dependents": "No", "tenure": 1, "PhoneService": "No", "MultipleLines": "No phone service",
       "InternetService": "DSL", "OnlineSecurity": "No", "OnlineBackup": "Yes", "DeviceProtection": "No",
       "TechSupport": "No", "StreamingTV": "No", "StreamingMovies": "No", "Contract": "Month-to-month",
       "PaperlessBilling": "Yes", "PaymentMethod": "Electronic check", "MonthlyCharges": 29.85,
       "TotalCharges": 29.85}}]}}'"""


def _curl_v2(port: int) -> str:
    fields = [
        ("customerID", "BYTES", '"7590-VHVEG"'),
        ("gender", "BYTES", '"Female"'),
        ("SeniorCitizen", "INT64", "0"),
        ("Partner", "BYTES", '"Yes"'),
        ("Dependents", "BYTES", '"No"'),
        ("tenure", "INT64", "1"),
        ("PhoneService", "BYTES", '"No"'),
        ("MultipleLines", "BYTES", '"No phone service"'),
        ("InternetService", "BYTES", '"DSL"'),
        ("OnlineSecurity", "BYTES", '"No"'),
        ("OnlineBackup", "BYTES", '"Yes"'),
        ("DeviceProtection", "BYTES", '"No"'),
        ("TechSupport", "BYTES", '"No"'),
        ("StreamingTV", "BYTES", '"No"'),
        ("StreamingMovies", "BYTES", '"No"'),
        ("Contract", "BYTES", '"Month-to-month"'),
        ("PaperlessBilling", "BYTES", '"Yes"'),
        ("PaymentMethod", "BYTES", '"Electronic check"'),
        ("MonthlyCharges", "FP64", "29.85"),
        ("TotalCharges", "FP64", "29.85"),
    ]
    inputs = ",\n    ".join(
        f'{{"name": "{name}", "datatype": "{datatype}", "shape": [1], "data": [{value}]}}'
        for name, datatype, value in fields
    )
    return (
        f"curl -s -X POST http://127.0.0.1:{port}/v2/models/churn/infer "
        f"-H 'content-type: application/json' -d '{{\"inputs\": [\n    {inputs}]}}'"
    )


@app.command("serve")
def serve_command(
    train_if_missing: Annotated[
        bool,
        typer.Option("--train-if-missing", help="Train and register a model first if none is registered"),
    ] = False,
    port: Annotated[int, typer.Option(help="Transformer HTTP port (v1 and v2)")] = 8080,
    predictor_port: Annotated[
        int, typer.Option(help="Predictor HTTP port; gRPC and metrics use the next two")
    ] = 8090,
    workers: Annotated[int, typer.Option(help="Transformer worker processes")] = 1,
    version: Annotated[str, typer.Option(help="Registered version or alias to serve")] = "champion",
    cv_repeats: Annotated[int, typer.Option(help="Repeated CV when training here (0: skip)")] = 0,
    detector: Annotated[
        bool, typer.Option(help="Also run the drift detector and post payload logs to it")
    ] = True,
    detector_port: Annotated[int, typer.Option(help="Drift detector HTTP port")] = 8095,
) -> None:
    """Serve the local stack on 127.0.0.1 until Ctrl-C: predictor (MLServer), transformer, drift detector."""
    from churn_core.data import DataNotFoundError, DataValidationError
    from churn_model.pipeline import export_version, train
    from churn_model.registry import Registry, RegistryError
    from churn_model.settings import get_settings
    from churn_model.training import TrainingConfig
    from churnops.settings import get_stack_settings
    from churnops.stack import ServingPorts, run_stack, serving_stack

    settings = get_settings()
    registry = Registry(settings)
    if not registry.has_versions():
        if not train_if_missing:
            typer.echo("no model is registered: run `churnops train` or pass --train-if-missing", err=True)
            raise typer.Exit(1)
        typer.echo("no model is registered: training one (churnops train --cv-repeats 0) ...", err=True)
        try:
            train(settings, TrainingConfig(seed=settings.seed, cv_repeats=cv_repeats))
        except (DataNotFoundError, DataValidationError) as error:
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(1) from error
    try:
        info = registry.resolve(version)
    except RegistryError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from error
    artefact = export_version(registry, info.version)
    typer.echo(f"serving {settings.registered_name} version {info.version} from {artefact}", err=True)
    stack_settings = get_stack_settings()
    predictor_python = stack_settings.predictor_python
    if not predictor_python.exists():
        typer.echo(f"error: no predictor environment at {predictor_python} (run `make install`)", err=True)
        raise typer.Exit(1)
    ports = ServingPorts(port, predictor_port, predictor_port + 1, predictor_port + 2, detector_port)
    detector_python = stack_settings.detector_python
    components = serving_stack(
        artefact,
        info.version,
        predictor_python,
        ports,
        workers=workers,
        with_detector=detector,
        detector_python=detector_python,
        home=settings.home,
    )

    def announce(_: object) -> None:
        typer.echo(f"\nchurn model {info.version} serving on http://127.0.0.1:{port} — Ctrl-C stops.\n")
        typer.echo("v1:\n" + CURL_V1.format(port=port) + "\n")
        typer.echo("v2:\n" + _curl_v2(port) + "\n")
        if detector:
            typer.echo(
                f"drift detector and prediction store: http://127.0.0.1:{detector_port} "
                "(/performance, /reports/drift/latest, /metrics)\n"
            )

    code = run_stack(components, on_ready=announce, log=lambda line: typer.echo(line, err=True))
    raise typer.Exit(code)


@app.command(
    "transformer",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []},
    add_help_option=False,
)
def transformer_command(ctx: typer.Context) -> None:
    """Run the transformer server alone (KServe model-server arguments, e.g. --predictor_host HOST:PORT)."""
    from churn_transformer.main import main

    raise typer.Exit(main(ctx.args))
