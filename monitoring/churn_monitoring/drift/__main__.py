"""`python -m churn_monitoring.drift`: the drift test of `churnops monitor drift`, in whatever environment
runs it. The CLI lives in the default environment (numpy 2, no alibi-detect) and runs this entry point
with the detector environment's interpreter (.venv-drift, `CHURNOPS_STACK_DETECTOR_PYTHON`; the detector
image) when the chosen backend is not importable where it runs. Plain argparse, so that the detector
image needs no CLI package; same options, output and exit codes as the CLI (0 whatever the verdict, 1 for
a problem the user can fix, printed as one line).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path


def parser() -> argparse.ArgumentParser:
    arguments = argparse.ArgumentParser(
        prog="python -m churn_monitoring.drift",
        description="Test a customer CSV for drift against a serving artefact's reference sample.",
    )
    arguments.add_argument("--current", type=Path, required=True, help="customers CSV (Churn optional)")
    arguments.add_argument("--artefact", type=Path, required=True, help="exported serving artefact")
    arguments.add_argument("--backend", default=None, help="alibi or scipy [CHURNOPS_DETECTOR_DRIFT_BACKEND]")
    arguments.add_argument("--predictions", type=Path, default=None, help="churn_probability per customer")
    arguments.add_argument("--score", action="store_true", help="score the customers with the model")
    arguments.add_argument("--format", dest="output_format", default="table", help="table or json")
    arguments.add_argument("--html", type=Path, default=None, help="also write an HTML report")
    arguments.add_argument("--png", type=Path, default=None, help="also write a PNG of the drifted fields")
    return arguments


def main(argv: Sequence[str] | None = None) -> int:
    from churn_monitoring.drift.command import DriftCommandError, print_error, run_drift

    args = parser().parse_args(argv)
    try:
        run_drift(
            args.current,
            artefact=args.artefact,
            backend=args.backend,
            predictions=args.predictions,
            score=args.score,
            output_format=args.output_format,
            html=args.html,
            png=args.png,
        )
    except DriftCommandError as error:
        print_error(error)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
