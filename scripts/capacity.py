"""Capacity: step the request rate up until p95 passes the target; the highest rate held, per core.

    python scripts/capacity.py --workers 1 2 --start 100 --step 100 --step-seconds 30
    python scripts/capacity.py --workers 1 --stack-cpus 0 --loadgen-cpus 1     # one core for the stack

For each transformer worker count, starts the serving stack (predictor + transformer; the detector only
with --with-detector: in the cluster payload logs are posted by KServe's agent sidecar, not by the
transformer) and runs locust for `--step-seconds` at each rate (statistics reset once every user is
spawned), from `--start` up by `--step`, until a step fails: failures, p95 >= `--p95-ms`, or less than
95 % of the asked rate achieved (the service, or the load generator, could not keep up). The request mix
is the clients' minus feedback, which goes to the detector (change it with --mix).

Prints one line per step (rate asked and achieved, customers/s, p50/p95/p99, errors, CPU cores used by
the stack and by locust) and a summary per worker count: the highest rate held, per core of the stack's
measured CPU use, and the requests in flight there (Little's law: rate x mean latency), from which it
derives the InferenceService's `scaleTarget` (KPA concurrency per pod). The load generator shares the
machine with the stack: its CPU use is printed, and `--loadgen-cpus`/`--stack-cpus` pin them apart
(taskset). Writes reports/load/capacity/capacity.json and locust's reports per step.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scripts.load.localstack import LocalStack, StackOptions, local_stack, resolve_artefact  # noqa: E402
from scripts.load.locust_run import LocustResult, run_locust  # noqa: E402
from scripts.load.procstats import sample_tree  # noqa: E402

CUSTOMERS = {"v2_single": 1, "v2_batch10": 10, "v2_batch100": 100, "v1_single": 1}
KPA_TARGET_UTILIZATION = 0.70  # autoscaling.knative.dev/target-utilization-percentage in the manifest


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="transformer worker counts")
    parser.add_argument("--start", type=float, default=100.0, help="first rate, requests/s")
    parser.add_argument("--step", type=float, default=100.0, help="rate increment, requests/s")
    parser.add_argument("--max", type=float, default=5000.0, help="highest rate tried")
    parser.add_argument("--step-seconds", type=float, default=30.0, help="length of each step")
    parser.add_argument("--p95-ms", type=float, default=100.0, help="latency target")
    parser.add_argument(
        "--mix", default="feedback=0", help="request mix (default: the clients' minus feedback)"
    )
    parser.add_argument("--with-detector", action="store_true", help="also run the detector (payload logs)")
    parser.add_argument("--stack-cpus", default=None, help="pin the stack's processes (taskset -c)")
    parser.add_argument("--loadgen-cpus", default=None, help="pin locust (taskset -c)")
    parser.add_argument("--out", type=Path, default=REPO / "reports" / "load" / "capacity")
    parser.add_argument("--artefact", type=Path, help="artefact directory (default: the champion's)")
    return parser.parse_args()


def stack_cpu_seconds(stack: LocalStack) -> float:
    return sum(sample_tree(pid)[3] for pid in stack.pids().values())


def pin(stack: LocalStack, cpus: str) -> None:
    """Every thread of every process of the stack onto `cpus`."""
    import psutil

    for pid in stack.pids().values():
        for process in [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]:
            subprocess.run(
                ["taskset", "-a", "-p", "-c", cpus, str(process.pid)], check=True, capture_output=True
            )


def customers_per_second(result: LocustResult) -> float:
    """Customers scored per second: the achieved rate split by the kinds' shares of the requests."""
    total = result.total.requests
    customers = sum(result.rows[k].requests * n for k, n in CUSTOMERS.items() if k in result.rows)
    return result.achieved_rps * customers / total if total else 0.0


def step(stack: LocalStack, rate: float, args: argparse.Namespace, prefix: Path) -> dict[str, float]:
    import time

    cpu_before, started = stack_cpu_seconds(stack), time.monotonic()
    result = run_locust(
        stack.serving_url, rate, args.step_seconds, prefix, mix=args.mix, cpus=args.loadgen_cpus,
        reset_stats=True,
    )  # fmt: skip
    stack_cores = (stack_cpu_seconds(stack) - cpu_before) / (time.monotonic() - started)
    total = result.total
    achieved = result.achieved_rps
    held = total.failures == 0 and total.p95_ms < args.p95_ms and achieved >= 0.95 * rate
    row = {
        "rate": rate,
        "achieved_rps": achieved,
        "customers_per_s": customers_per_second(result),
        "p50_ms": total.p50_ms,
        "p95_ms": total.p95_ms,
        "p99_ms": total.p99_ms,
        "mean_ms": total.mean_ms,
        "failures": total.failures,
        "requests": total.requests,
        "stack_cores": stack_cores,
        "locust_cores": result.cpu_cores,
        "held": held,
    }
    print(
        f"  {rate:7.0f}/s asked, {achieved:7.1f}/s achieved ({row['customers_per_s']:,.0f} customers/s), "
        f"p50 {total.p50_ms:.0f} p95 {total.p95_ms:.0f} p99 {total.p99_ms:.0f} ms, {total.failures} errors; "
        f"stack {stack_cores:.2f} cores, locust {result.cpu_cores:.2f} cores -> {'held' if held else 'NOT held'}",
        flush=True,
    )
    if result.cpu_cores > 0.9:
        print("    (locust used ~a full core: the load generator may be what saturates)", flush=True)
    return row


def search(artefact: Path, version: str, workers: int, args: argparse.Namespace) -> dict[str, object]:
    options = StackOptions(workers=workers, detector=args.with_detector)
    steps: list[dict[str, float]] = []
    print(f"\ntransformer workers {workers}:", flush=True)
    with local_stack(artefact, version, args.out / f"stack-w{workers}", options) as stack:
        if args.stack_cpus:
            pin(stack, args.stack_cpus)
        rate = args.start
        while rate <= args.max:
            steps.append(step(stack, rate, args, args.out / f"w{workers}" / f"r{int(rate)}"))
            if not steps[-1]["held"]:
                break
            rate += args.step
    held = [s for s in steps if s["held"]]
    best = held[-1] if held else None
    return {"workers": workers, "steps": steps, "best": best}


def summarize(results: list[dict[str, object]], args: argparse.Namespace) -> None:
    print(f"\ncommand: python scripts/capacity.py {' '.join(sys.argv[1:])}".rstrip())
    print(
        f"pinning: stack {args.stack_cpus or 'not pinned'}, locust {args.loadgen_cpus or 'not pinned'}; "
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}"
    )
    print(f"\nhighest rate held with p95 < {args.p95_ms:g} ms and 0 errors:")
    print(
        "| transformer workers | req/s held | customers/s | p95 ms | stack CPU cores | req/s per core "
        "| in flight (rate x mean latency) |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for result in results:
        best = result["best"]
        if not isinstance(best, dict):
            print(f"| {result['workers']} | none held from {args.start:g}/s | | | | | |")
            continue
        per_core = best["achieved_rps"] / best["stack_cores"] if best["stack_cores"] else float("nan")
        in_flight = best["achieved_rps"] * best["mean_ms"] / 1000
        print(
            f"| {result['workers']} | {best['achieved_rps']:,.0f} | {best['customers_per_s']:,.0f} "
            f"| {best['p95_ms']:.0f} | {best['stack_cores']:.2f} | {per_core:,.0f} | {in_flight:.1f} |"
        )
    one = next((r["best"] for r in results if r["workers"] == 1 and isinstance(r["best"], dict)), None)
    if one is None:
        return
    in_flight = one["achieved_rps"] * one["mean_ms"] / 1000
    target = max(1, math.ceil(in_flight / KPA_TARGET_UTILIZATION))
    print(
        f"\nscaleTarget: a pod (one transformer worker on a 1-CPU limit, MLServer beside it) holds "
        f"{one['achieved_rps']:,.0f} req/s within p95 < {args.p95_ms:g} ms with {in_flight:.1f} requests in "
        f"flight on average. KPA keeps {KPA_TARGET_UTILIZATION:.0%} of scaleTarget in flight per pod, so "
        f"scaleTarget = ceil({in_flight:.1f} / {KPA_TARGET_UTILIZATION}) = {target} puts pods at the measured "
        f"knee and scales out before it; containerConcurrency stays 0 (no hard cap: queue-proxy would turn "
        f"bursts into 503s instead of queueing them for milliseconds)."
    )


def main() -> int:
    args = parse_args()
    artefact, version = resolve_artefact(args.artefact)
    args.out.mkdir(parents=True, exist_ok=True)
    print(
        f"capacity: model {version}, workers {args.workers}, from {args.start:g}/s by {args.step:g}/s, "
        f"{args.step_seconds:g} s a step, p95 target {args.p95_ms:g} ms, mix '{args.mix}'",
        flush=True,
    )
    results = [search(artefact, version, workers, args) for workers in args.workers]
    summarize(results, args)
    (args.out / "capacity.json").write_text(
        json.dumps({"command": sys.argv, "results": results}, indent=2) + "\n", encoding="utf-8"
    )
    print(f"\nwritten to {args.out / 'capacity.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
