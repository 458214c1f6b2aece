"""The detector process: `python -m churn_monitoring.service` (the image's entry point) and `churnops monitor
serve` both run `serve`; plain arguments, so the image needs no CLI package."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path


def serve(host: str | None = None, port: int | None = None, model_dir: Path | None = None) -> None:
    """Run the drift detector: KServe payload logs in, prediction store, drift, feedback, live F1."""
    import uvicorn

    from churn_core.logging import configure_logging
    from churn_monitoring.service.app import create_app
    from churn_monitoring.settings import get_settings

    configure_logging()
    settings = get_settings()
    if model_dir is not None:
        settings = settings.model_copy(update={"model_dir": model_dir})
    app = create_app(settings)
    uvicorn.run(
        app,
        host=host or settings.host,
        port=port or settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=20,
        timeout_keep_alive=settings.keep_alive_timeout_s,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="churn_monitoring.service", description=serve.__doc__)
    parser.add_argument("--host", default=None, help="bind address [CHURNOPS_DETECTOR_HOST]")
    parser.add_argument("--port", type=int, default=None, help="port [CHURNOPS_DETECTOR_PORT]")
    parser.add_argument("--model-dir", type=Path, default=None, help="artefact [CHURNOPS_DETECTOR_MODEL_DIR]")
    args = parser.parse_args(argv)
    serve(args.host, args.port, args.model_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
