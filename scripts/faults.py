"""Fault scenarios at full length under ~100 requests/s of the client mix (scripts/load/faults.py).

    python scripts/faults.py                       # all five, 60 s outages
    python scripts/faults.py --scenario postgres --outage 60 --rate 100
    python scripts/faults.py --scenario redis --redis-mode closed

For each scenario: when the fault began and ended, what clients saw before, during and after it (statuses,
p50/p95/p99), recovery times, what the prediction store holds against what was served, and the invariants
(ok/FAIL). Writes reports/load/faults/faults.json. Exit code 1 when an invariant failed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scripts.load.faults import SCENARIOS, Phases, run_alone  # noqa: E402
from scripts.load.localstack import resolve_artefact  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenario", choices=[*SCENARIOS, "all"], default="all")
    parser.add_argument("--rate", type=float, default=100.0, help="requests per second")
    parser.add_argument("--before", type=float, default=10.0, help="seconds of traffic before the fault")
    parser.add_argument("--outage", type=float, default=60.0, help="seconds the fault lasts")
    parser.add_argument("--after", type=float, default=15.0, help="seconds of traffic after recovery")
    parser.add_argument("--redis-mode", choices=["open", "closed", "both"], default="open")
    parser.add_argument("--workers", type=int, default=1, help="transformer worker processes")
    parser.add_argument("--out", type=Path, default=REPO / "reports" / "load" / "faults")
    parser.add_argument("--artefact", type=Path, help="artefact directory (default: the champion's)")
    args = parser.parse_args()

    from scripts.load.localstack import StackOptions

    artefact, version = resolve_artefact(args.artefact)
    phases = Phases(args.before, args.outage, args.after)
    names = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    print(
        f"faults: model {version}, {args.rate:g} req/s, {phases.before_s:g} s before, "
        f"{phases.outage_s:g} s outage, {phases.after_s:g} s after; {os.cpu_count()} cores, "
        f"load average {os.getloadavg()[0]:.2f}\ncommand: python scripts/faults.py {' '.join(sys.argv[1:])}",
        flush=True,
    )
    results = []
    for name in names:
        modes = ["open", "closed"] if args.redis_mode == "both" else [args.redis_mode]
        for mode in modes if name == "redis" else ["open"]:
            scratch = args.out / (f"{name}-{mode}" if name == "redis" else name)
            base = StackOptions(workers=args.workers, redis_failure_mode=mode)
            started = time.monotonic()
            report = run_alone(name, artefact, version, scratch, phases, base, rate=args.rate)
            took = time.monotonic() - started
            print("\n" + "\n".join(report.lines()) + f"\n  (scenario took {took:.0f} s)", flush=True)
            results.append(
                {
                    "scenario": report.name,
                    "figures": {
                        k: v if isinstance(v, (int, float, str)) else str(v)
                        for k, v in report.figures.items()
                    },
                    "checks": report.checks,
                    "notes": report.notes,
                }
            )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "faults.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    failed = [f"{r['scenario']}: {c}" for r in results for c, held in r["checks"].items() if not held]
    print(f"\n{len(failed)} invariant(s) failed" + "".join(f"\n  - {f}" for f in failed))
    print(f"written to {args.out / 'faults.json'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
