"""Soak: the client mix at a steady rate for a long time against the local stack, watching every process.

    python scripts/soak.py --minutes 30 --rate 100          # the soak (`make load` runs 2 min)

Starts the stack (detector with its PostgreSQL store, predictor, transformer; `--authorizer` adds the
authorizer and the gateway, and the requests carry an API key), runs locust headless with the mix of
scripts/load/payloads.py at `--rate` requests/s, and samples resident memory and open file descriptors of
every process of the stack every `--interval` seconds. Prints the latency table (locust's figures), the
errors (must be 0), and per component the memory and descriptors after the warm-up: first, last, max and
the least-squares slope per hour (flat means a slope within the noise, not growing). Writes locust's CSV
and HTML report, the samples (CSV), a JSON summary and two PNG plots under `--out`.
Exit code 1 when there were errors or p95 was over `--p95-ms`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scripts.load.localstack import StackOptions, local_stack, resolve_artefact, unrefused_drops  # noqa: E402
from scripts.load.locust_run import history, run_locust, table  # noqa: E402
from scripts.load.plots import plot_latency, plot_resources  # noqa: E402
from scripts.load.procstats import Growth, Sampler, growth  # noqa: E402

# A slope below these is read as flat over a run this short: allocator and cache warm-up moves a Python
# process by a few MiB, and descriptors move with open keep-alive connections.
FLAT_MIB_PER_HOUR = 20.0
FLAT_FDS_PER_HOUR = 20.0
MIN_TREND_SECONDS = 600.0  # an hourly slope fitted over less than this is mostly noise
# The detector's de-duplication memory keeps each event's key for 600 s (at most 100,000 keys), so at the
# soak's ~170 events/s it fills for ~10 minutes: a trend is judged once it is full, on runs long enough
# to leave twice that much after it.
FILL_SECONDS = 720.0


def default_warmup(seconds: float) -> float:
    """Seconds left out of the trends when --warmup is not given."""
    return FILL_SECONDS if seconds >= 2 * FILL_SECONDS else min(60.0, seconds / 5)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=15.0, help="length of the run")
    parser.add_argument("--rate", type=float, default=100.0, help="requests per second")
    parser.add_argument("--workers", type=int, default=1, help="transformer worker processes")
    parser.add_argument("--store", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--authorizer", action="store_true", help="through the authorizer (API key)")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between resource samples")
    parser.add_argument(
        "--warmup",
        type=float,
        default=None,
        help="seconds left out of the trends (default: 720 on runs of 24 min or more)",
    )
    parser.add_argument("--p95-ms", type=float, default=100.0, help="latency target")
    parser.add_argument("--mix", default="", help="request mix weights, e.g. v2_single=60,feedback=0")
    parser.add_argument("--loadgen-cpus", default=None, help="pin locust with taskset -c (e.g. 1)")
    parser.add_argument("--out", type=Path, default=REPO / "reports" / "load" / "soak")
    parser.add_argument("--artefact", type=Path, help="artefact directory (default: the champion's)")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    artefact, version = resolve_artefact(args.artefact)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    seconds = args.minutes * 60
    warmup = args.warmup if args.warmup is not None else default_warmup(seconds)
    options = StackOptions(workers=args.workers, store=args.store, authorizer=args.authorizer)
    print(
        f"soak: model {version}, {args.rate:g} req/s for {args.minutes:g} min, transformer workers "
        f"{args.workers}, store {args.store}, authorizer {'on' if args.authorizer else 'off'}; "
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    load_before = os.getloadavg()
    with (
        local_stack(artefact, version, out / "stack", options) as stack,
        Sampler(stack.pids, args.interval) as sampler,
    ):
        started = time.monotonic()
        result = run_locust(
            stack.serving_url,
            args.rate,
            seconds,
            out / "locust",
            detector_host=stack.detector_url,
            api_key=stack.api_key or "",
            mix=args.mix,
            cpus=args.loadgen_cpus,
        )
        sampler.stop()
        # Only samples under load: the last one can fall after locust's users stopped and closed their
        # connections, which would bend the descriptor trend down.
        sampler.samples = [sample for sample in sampler.samples if sample.t <= seconds]
        elapsed = time.monotonic() - started
        drops = stack.payload_drops()
    load_after = os.getloadavg()
    trends = [g for g in (growth(sampler.of(name), warmup) for name in sampler.components()) if g]
    sampler.write_csv(out / "resources.csv")
    title = f"soak: {args.rate:g} req/s for {args.minutes:g} min (model {version})"
    images = {
        "resources": out / "soak-resources.png",
        "latency": out / "soak-latency.png",
    }
    plot_resources(sampler, images["resources"], title)
    plot_latency(history(out / "locust"), images["latency"], title, args.p95_ms)
    verdict = report(args, result, trends, elapsed, warmup, (load_before[0], load_after[0]), drops)
    summary = {
        "command": "python scripts/soak.py " + " ".join(sys.argv[1:]),
        "model_version": version,
        "locust_command": " ".join(result.command),
        "seconds": elapsed,
        "rows": {name: asdict(row) for name, row in result.rows.items()},
        "locust_cpu_cores": result.cpu_cores,
        "resources": [asdict(t) for t in trends],
        "load_average": [load_before[0], load_after[0]],
        "verdict": verdict,
        "files": {"html": str(result.html), **{k: str(v) for k, v in images.items()}},
    }
    (out / "soak.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(
        f"\nreports: {result.html} (locust HTML), {out}/locust_*.csv, {out}/resources.csv, "
        f"{images['resources']}, {images['latency']}, {out}/soak.json"
    )
    return 0 if all(verdict.values()) else 1


def report(
    args: argparse.Namespace,
    result: object,
    trends: list[Growth],
    elapsed: float,
    warmup: float,
    load: tuple[float, float],
    drops: dict[str, int],
) -> dict[str, bool]:
    from scripts.load.locust_run import LocustResult

    assert isinstance(result, LocustResult)
    total = result.total
    print(f"\ncommand: python scripts/soak.py {' '.join(sys.argv[1:])}".rstrip())
    print(
        f"ran {elapsed / 60:.1f} min; load average (1 min) {load[0]:.2f} before, {load[1]:.2f} after; "
        f"locust used {result.cpu_cores:.2f} cores"
    )
    print()
    print("\n".join(table(result)))
    if result.failures:
        print("\nfailures (locust):")
        for failure in result.failures[:10]:
            print(f"  {failure.get('Occurrences')} x {failure.get('Name')}: {failure.get('Error')}")
    print(f"\nresources after a {warmup:.0f} s warm-up (slope: least squares, per hour):")
    print(
        "| component | processes | RSS first MiB | RSS last MiB | RSS max MiB | RSS slope MiB/h "
        "| fds first | fds last | fds max | fds slope /h | CPU cores |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for t in trends:
        print(
            f"| {t.component} | {t.processes} | {t.rss_first_mib:.1f} | {t.rss_last_mib:.1f} | {t.rss_max_mib:.1f} "
            f"| {t.rss_slope_mib_per_h:+.1f} | {t.fds_first} | {t.fds_last} | {t.fds_max} "
            f"| {t.fds_slope_per_h:+.1f} | {t.cpu_cores:.2f} |"
        )
    verdict = {
        "no errors": total.failures == 0,
        f"p95 under {args.p95_ms:g} ms": total.p95_ms < args.p95_ms,
        f"rate held (>= 95 % of {args.rate:g}/s sent)": result.achieved_rps >= 0.95 * args.rate,
    }
    if trends and min(t.span_s for t in trends) >= MIN_TREND_SECONDS:
        verdict["memory flat"] = all(abs(t.rss_slope_mib_per_h) < FLAT_MIB_PER_HOUR for t in trends)
        verdict["descriptors flat"] = all(abs(t.fds_slope_per_h) < FLAT_FDS_PER_HOUR for t in trends)
    else:
        print(
            f"\n(memory and descriptor trends are judged on runs of {MIN_TREND_SECONDS / 60:.0f} min or more)"
        )
    verdict |= {
        "no payload log event lost (local payload logger: none queue_full or post_failed)": unrefused_drops(
            drops
        )
        == 0,
    }
    print(
        f"\np50 {total.p50_ms:.0f} ms, p95 {total.p95_ms:.0f} ms, p99 {total.p99_ms:.0f} ms, "
        f"{total.requests:,} requests at {result.achieved_rps:.1f}/s, {total.failures} errors; "
        f"payload log events dropped by the transformer's local logger: {drops or 'none'} (`refused`: "
        "events of requests answered 4xx, which the detector refuses as well)"
    )
    for check, passed in verdict.items():
        print(f"  [{'ok' if passed else 'FAIL'}] {check}")
    return verdict


if __name__ == "__main__":
    sys.exit(main())
