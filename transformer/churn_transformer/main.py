"""Entry point of the transformer process (`python -m churn_transformer`, `churnops transformer`).

Accepts KServe's standard model-server arguments (KServe injects `--model_name` and `--predictor_host`
into transformer containers; `--http_port`, `--workers`, `--predictor_protocol` ... work as usual) and
reads the rest from `TransformerSettings` (CHURNOPS_*). Exit code 2 with a one-line reason when the
transformer must not serve: unreadable artefact, no predictor, or a predictor at another model version.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
DEFAULT_MODEL_NAME = "churn"


def _one_thread_per_worker() -> None:
    # Each worker is one process doing small numpy operations; a BLAS/OpenMP pool per process only adds
    # contention on a shared node (see README). Must happen before numpy is imported.
    for variable in THREAD_VARIABLES:
        os.environ.setdefault(variable, "1")


def build_parser() -> argparse.ArgumentParser:
    from kserve import model_server

    parser = argparse.ArgumentParser(
        prog="churn-transformer",
        parents=[model_server.parser],
        description="ChurnOps KServe transformer (model `churn`); settings from CHURNOPS_* variables.",
    )
    # Our defaults where KServe's do not fit a transformer: no gRPC server of its own, no second latency
    # log line per request (the request log carries latency), our own logging set-up.
    from churn_transformer.settings import get_settings

    parser.set_defaults(
        enable_grpc=False,
        enable_latency_logging=False,
        configure_logging=False,
        http_port=get_settings().http_port,
    )
    return parser


def resolve_protocol(setting: str | None, argument: str | None) -> str:
    """CHURNOPS_TRANSFORMER_PREDICTOR_PROTOCOL, else a v2 --predictor_protocol, else gRPC v2. MLServer has no v1."""
    if setting:
        return setting
    if argument in ("v2", "grpc-v2"):
        return argument
    return "grpc-v2"


def main(argv: Sequence[str] | None = None) -> int:
    _one_thread_per_worker()
    from churn_transformer.metrics import MULTIPROC_ENV, prepare_multiprocess_dir, remove_multiprocess_dir

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


def _serve(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(list(argv) if argv is not None else None)

    import structlog

    from churn_transformer.model import ChurnTransformer
    from churn_transformer.predictor import StartupError
    from churn_transformer.server import ChurnModelServer, configure_process_logging
    from churn_transformer.settings import get_settings

    settings = get_settings()
    configure_process_logging(settings.log_level)
    log = structlog.get_logger("churn_transformer")
    protocol = resolve_protocol(settings.predictor_protocol, args.predictor_protocol)
    predictor_host = args.predictor_host or settings.predictor_host
    model_name = args.model_name if args.model_name != "model" else DEFAULT_MODEL_NAME
    try:
        if not predictor_host:
            raise StartupError(
                "no predictor: pass --predictor_host HOST:PORT or set CHURNOPS_TRANSFORMER_PREDICTOR_HOST"
            )
        model = ChurnTransformer(model_name, settings, protocol, predictor_host)
        log.info(
            "transformer starting",
            model=model_name,
            model_version=model.version,
            model_dir=str(settings.model_dir),
            predictor=predictor_host,
            predictor_protocol=protocol,
            workers=args.workers,
        )
        model.load()
    except StartupError as error:
        log.error("transformer refused to start", reason=str(error))
        print(f"churn-transformer: {error}", file=sys.stderr)
        return 2
    server = ChurnModelServer(
        settings,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        workers=args.workers,
        max_threads=args.max_threads,
        max_asyncio_workers=args.max_asyncio_workers,
        enable_grpc=args.enable_grpc,
        enable_docs_url=args.enable_docs_url,
        enable_latency_logging=args.enable_latency_logging,
        access_log_format=args.access_log_format,
        event_loop=args.event_loop,
        timeout_keep_alive=args.timeout_keep_alive,
    )
    log.info("transformer ready", host=settings.host, port=args.http_port, model_version=model.version)
    server.start([model])
    return 0
