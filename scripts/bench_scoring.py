"""Benchmark of `churnops score`, end to end, against a pure CSV-parse reference in the same run.

Prints rows/s of the whole command (process start, registry look-up, model load, scoring, writing) and of
the scoring itself (the command's own figure: read, validate, predict, explain, write), and peak memory,
for 100k and 1M rows — equal peaks mean memory stays flat as files grow — and the ratio to
pyarrow simply reading the same file, the floor any CSV-in/CSV-out scorer pays.

    .venv/bin/python scripts/bench_scoring.py [--model-version champion]
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _child_peak_kib() -> int:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss


def _run(argv: list[str]) -> tuple[float, int, str]:
    """Wall seconds, peak RSS (MiB) and stderr of one command, run alone in a fresh process."""
    wrapper = [
        sys.executable,
        "-c",
        "import resource, subprocess, sys, time;"
        "t = time.perf_counter(); r = subprocess.run(sys.argv[1:], check=True, capture_output=True, text=True);"
        "sys.stderr.write(r.stderr);"
        "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)",
        *argv,
    ]
    done = subprocess.run(
        wrapper, check=True, capture_output=True, text=True, env={**os.environ, "COLUMNS": "300"}
    )
    out = done.stdout.split()
    return float(out[0]), int(out[1]) // 1024, done.stderr


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-version", default="champion")
    parser.add_argument("--workdir", type=Path, default=REPO / ".churnops" / "bench")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    sizes = {"100k": 100_000, "1M": 1_000_000}
    print(
        f"{'rows':>6} {'command s':>10} {'rows/s':>9} {'scoring s':>10} {'rows/s':>9} {'peak MiB':>9} "
        f"{'read-only s':>12} {'command/read':>13}"
    )
    for label, rows in sizes.items():
        source = args.workdir / f"customers-{label}.csv"
        if not source.exists():
            subprocess.run(
                [
                    sys.executable,
                    str(REPO / "scripts" / "make_scoring_input.py"),
                    "--rows",
                    str(rows),
                    "--output",
                    str(source),
                ],
                check=True,
                capture_output=True,
            )
        output = args.workdir / f"scores-{label}.csv"
        seconds, peak, log = _run(
            [
                str(BIN / "churnops"),
                "score",
                "--input",
                str(source),
                "--output",
                str(output),
                "--model-version",
                args.model_version,
            ]
        )
        scoring = float(re.search(r"in ([0-9.]+) s", log).group(1))  # type: ignore[union-attr]
        read_seconds, _, _ = _run(
            [sys.executable, "-c", "import sys, pyarrow.csv as c; c.read_csv(sys.argv[1])", str(source)]
        )
        print(
            f"{label:>6} {seconds:10.2f} {rows / seconds:9,.0f} {scoring:10.2f} {rows / scoring:9,.0f} "
            f"{peak:9,d} {read_seconds:12.2f} {seconds / read_seconds:12.1f}x"
        )


if __name__ == "__main__":
    started = time.perf_counter()
    main()
    print(f"(benchmark took {time.perf_counter() - started:.0f} s)")
