"""Entry point of the transformer process (`python -m churn_transformer`, `churnops transformer`).

Accepts KServe's model-server arguments (KServe injects `--model_name`, `--predictor_host`, `--http_port`,
`--workers` and `--predictor_protocol` into transformer containers; the hop is always gRPC v2) and reads
the rest from `TransformerSettings` (CHURNOPS_TRANSFORMER_*). Exit code 2 with a one-line reason when the
transformer must not serve: invalid settings, an artefact that is not the pinned one or unreadable, no
predictor, or a predictor at another model version. Then uvicorn serves app.py: in this process with one
worker, else in `--workers` processes (each builds its model; metrics add up through prometheus-client's
multiprocess mode). SIGTERM drains (app.py).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
DEFAULT_MODEL_NAME = "churn"


def _one_thread_per_worker() -> None:
    # Each worker is one process doing small numpy operations; a BLAS/OpenMP pool per process only adds
    # contention on a shared node (see README). Must happen before numpy is imported.
    for variable in THREAD_VARIABLES:
        os.environ.setdefault(variable, "1")


def build_parser(default_port: int) -> argparse.ArgumentParser:
    from churn_transformer.internals import model_server_parser

    parser = argparse.ArgumentParser(
        prog="churn-transformer",
        parents=[model_server_parser()],
        description="ChurnOps KServe transformer (model `churn`); settings from CHURNOPS_* variables.",
    )
    parser.set_defaults(http_port=default_port)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    _one_thread_per_worker()
    from churn_transformer.telemetry import MULTIPROC_ENV, prepare_multiprocess_dir, remove_multiprocess_dir

    # Before anything imports prometheus_client (kserve does): several workers need multiprocess metrics.
    workers = argparse.ArgumentParser(add_help=False)
    workers.add_argument("--workers", type=int, default=1)
    metrics_dir = None
    if workers.parse_known_args(argv)[0].workers > 1 or os.environ.get(MULTIPROC_ENV):
        metrics_dir = prepare_multiprocess_dir()
    try:
        return _serve(argv)
    finally:
        if metrics_dir is not None:
            remove_multiprocess_dir(metrics_dir)


def _settings() -> object:
    from pydantic import ValidationError

    from churn_transformer.settings import get_settings

    try:
        return get_settings()
    except ValidationError as error:
        problems = "; ".join(
            f"CHURNOPS_TRANSFORMER_{'.'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in error.errors()
        )
        return f"invalid settings: {problems}"


def _serve(argv: Sequence[str] | None) -> int:
    settings = _settings()
    if isinstance(settings, str):
        print(f"churn-transformer: {settings}", file=sys.stderr)
        return 2
    from churn_transformer.settings import TransformerSettings

    assert isinstance(settings, TransformerSettings)
    args = build_parser(settings.http_port).parse_args(list(argv) if argv is not None else None)

    import structlog
    import uvicorn

    from churn_transformer.app import TransformerApp, configure_process_logging, tune_garbage_collector
    from churn_transformer.engine import StartupError
    from churn_transformer.model import ChurnTransformer

    configure_process_logging(settings.log_level)
    log = structlog.get_logger("churn_transformer")
    predictor_host = args.predictor_host or settings.predictor_host
    model_name = args.model_name if args.model_name != "model" else settings.model_name
    if args.predictor_protocol != "grpc-v2":  # KServe's default is v1, which MLServer does not speak
        log.info("the hop to the predictor is gRPC v2", predictor_protocol_argument=args.predictor_protocol)
    try:
        if not predictor_host:
            raise StartupError(
                "no predictor: pass --predictor_host HOST:PORT or set CHURNOPS_TRANSFORMER_PREDICTOR_HOST"
            )
        model = ChurnTransformer(model_name, settings, predictor_host)
        log.info(
            "transformer starting",
            model=model_name,
            model_version=model.version,
            model_dir=str(settings.model_dir),
            predictor=predictor_host,
            workers=args.workers,
        )
        model.load()
    except StartupError as error:
        log.error("transformer refused to start", reason=str(error))
        print(f"churn-transformer: {error}", file=sys.stderr)
        return 2
    common: dict[str, object] = {
        "host": settings.host,
        "port": args.http_port,
        "log_config": None,
        "access_log": False,
        "timeout_graceful_shutdown": max(1, round(settings.drain_timeout_s)),
        "timeout_keep_alive": args.timeout_keep_alive,
        "lifespan": "on",
        "loop": args.event_loop,
    }
    log.info("transformer ready", host=settings.host, port=args.http_port, model_version=model.version)
    # uvicorn drains on SIGTERM, then re-raises it to the handler it found: this one, so a drained
    # transformer exits 0 (and a SIGTERM before uvicorn listens ends it at once, cleanly).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    if args.workers > 1:
        # Each worker process builds its own app (app.worker_app) from the environment.
        os.environ["CHURNOPS_TRANSFORMER_MODEL_NAME"] = model_name
        os.environ["CHURNOPS_TRANSFORMER_PREDICTOR_HOST"] = predictor_host
        uvicorn.run("churn_transformer.app:worker_app", factory=True, workers=args.workers, **common)  # type: ignore[arg-type]
    else:
        app = TransformerApp(model, settings)
        tune_garbage_collector()
        uvicorn.run(app, **common)  # type: ignore[arg-type]
    return 0
