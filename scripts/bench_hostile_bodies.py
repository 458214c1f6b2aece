"""Issue 10's measured bound: hostile bodies at the transformer and the detector at once, on the local stack.

While 20 requests of 30 MB each go to the transformer (half with Content-Length, half chunked; each a v1
body of ~60,000 customers, far past the 4 MiB body cap and the 1,000-customer batch limit) and 100 events of
about 8 MB go to the detector (scripts/bench_hostile_events.py's four kinds: unanswered requests, chunked
oversize, 2.8 million empty arrays, 10,000-deep nesting), the resident memory of both processes (psutil,
with their children) is sampled every 20 ms and their health checks (`/v2/health/live`, `/healthz`) are
polled every 50 ms. Prints the peak RSS of each, the health checks' max and p99, every answer's status and
code, and a verdict against the stated bound:

- transformer peak RSS at most `--transformer-rss-mb` (default 512 MB: its container's memory request,
  half its 1 GiB limit, manifests/serving/inferenceservice.yaml);
- detector peak RSS at most `--detector-rss-mb` (default 512 MB: its memory request, half its limit,
  manifests/detector/deployment.yaml);
- every health check answered 200 within `--health-max-s` (default 1 s);
- no 5xx.

Exit 1 when the bound is not met. Not part of `make test` (a minute or two, and timings): run it by hand.

Measured on branch wt-attack before the transformer's boundary rewrite (2 shared cores, 2026-11-29): the
transformer read every 30 MB body whole and answered 400 batch_too_large after parsing it, peak RSS
1,146 MB from 182 MB, /v2/health/live max 2.6 s: the bound did NOT hold there. The detector held it: peak
253 MB from 107 MB, /healthz max 449 ms, 413/400/413 for the hostile kinds and 200 for the valid ones.
With the rewrite's transformer (wt-transformer at d93281f, not merged, run from an export): every body
refused with 413 payload_too_large, peak RSS 197 MB from 184 MB, health max 117 ms: bound held.

    .venv/bin/python scripts/bench_hostile_bodies.py                 # the registry's champion, exported
    .venv/bin/python scripts/bench_hostile_bodies.py --model-dir .churnops/models/3
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scripts import bench_hostile_events as events  # noqa: E402
from scripts.load.localstack import StackOptions, local_stack, resolve_artefact  # noqa: E402
from scripts.load.procstats import sample_tree  # noqa: E402

MB = 1 << 20
BODY_BYTES = 30 * MB


def transformer_body() -> bytes:
    """A v1 body of BODY_BYTES: the same customer over and over (valid JSON, ~500 bytes each)."""
    one = json.dumps({**events.CUSTOMER, "customerID": "HOSTILE-0000"}).encode()
    count = (BODY_BYTES - 20) // (len(one) + 1)
    body = b'{"instances": [' + b",".join([one] * count) + b"]}"
    return body + b" " * (BODY_BYTES - len(body))


def pieces(body: bytes, size: int = 256 * 1024) -> Iterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


def answer_code(response: httpx.Response) -> str:
    try:
        document = response.json()
    except ValueError:
        return ""
    if not isinstance(document, dict):
        return ""
    return str(document.get("code", document.get("reason", document.get("status", ""))))


def send_transformer(client: httpx.Client, url: str, body: bytes, index: int) -> tuple[str, int, str]:
    kind = "chunked" if index % 2 else "content-length"
    content = pieces(body) if index % 2 else body
    try:
        response = client.post(
            f"{url}/v1/models/churn:predict", content=content, headers={"content-type": "application/json"}
        )
    except httpx.HTTPError as error:  # a server that refuses early may close before the body is sent
        return kind, 0, type(error).__name__
    return kind, response.status_code, answer_code(response)


def run(args: argparse.Namespace) -> int:
    artefact, version = resolve_artefact(args.model_dir)
    options = StackOptions(
        workers=1,
        detector_python=Path(sys.executable),
        detector_env={"CHURNOPS_DETECTOR_DRIFT_BACKEND": "scipy"},
    )
    t_body = transformer_body()
    e_bodies = events.bodies()
    with (
        tempfile.TemporaryDirectory(prefix="hostile-bodies-") as scratch,
        local_stack(artefact, version, Path(scratch), options) as stack,
    ):
        pids = stack.pids()
        watches = [
            events.Watch("transformer", pids["transformer"], f"{stack.transformer_url}/v2/health/live"),
            events.Watch("detector", pids["detector"], f"{stack.detector_direct_url}/healthz"),
        ]
        time.sleep(1.0)
        baseline = {w.name: sample_tree(w.pid)[1] for w in watches}
        started = time.monotonic()
        with events.Watcher(watches, lambda pid: sample_tree(pid)[1]), httpx.Client(timeout=300.0) as client:
            with ThreadPoolExecutor(args.concurrency) as t_pool, ThreadPoolExecutor(16) as e_pool:
                t_jobs = [
                    t_pool.submit(send_transformer, client, stack.transformer_url, t_body, i)
                    for i in range(args.requests)
                ]
                e_jobs = [
                    e_pool.submit(
                        events.send,
                        client,
                        f"{stack.detector_direct_url}/events",
                        events.KINDS[i % 4],
                        e_bodies[events.KINDS[i % 4]],
                        i,
                    )
                    for i in range(args.events)
                ]
                outcomes = {
                    "transformer": Counter(job.result() for job in t_jobs),
                    "detector": Counter(job.result() for job in e_jobs),
                }
            time.sleep(1.0)
        elapsed = time.monotonic() - started
    return report(args, watches, baseline, outcomes, elapsed)


def report(
    args: argparse.Namespace,
    watches: list[events.Watch],
    baseline: dict[str, int],
    outcomes: dict[str, Counter[tuple[str, int, str]]],
    elapsed: float,
) -> int:
    limits = {"transformer": args.transformer_rss_mb, "detector": args.detector_rss_mb}
    print(
        f"{args.requests} requests of {BODY_BYTES // MB} MB to the transformer and {args.events} events of "
        f"~8 MB to the detector, {args.concurrency} + 16 senders, {elapsed:.1f} s"
    )
    failures = []
    for watch in watches:
        peak = max(watch.rss, default=baseline[watch.name])
        health = sorted(watch.health)
        p99 = health[int(0.99 * (len(health) - 1))] if health else float("nan")
        worst = max(health, default=float("nan"))
        print(f"{watch.name}:")
        for (kind, status, code), count in sorted(outcomes[watch.name].items()):
            print(f"  {kind:20s} {status:3d} {code:24s} x{count}")
        print(
            f"  RSS start {baseline[watch.name] / MB:.0f} MB, peak {peak / MB:.0f} MB "
            f"(bound {limits[watch.name]:.0f} MB)"
        )
        print(
            f"  health: {len(health)} polls, max {worst * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, "
            f"median {statistics.median(health) * 1000 if health else float('nan'):.0f} ms, "
            f"failures {watch.health_failures} (bound: every poll 200 within {args.health_max_s:g} s)"
        )
        if any(status >= 500 for _, status, _ in outcomes[watch.name]):
            failures.append(f"{watch.name}: a 5xx was answered")
        if peak > limits[watch.name] * MB:
            failures.append(f"{watch.name}: peak RSS {peak / MB:.0f} MB over {limits[watch.name]:.0f} MB")
        if watch.health_failures or worst >= args.health_max_s:
            failures.append(f"{watch.name}: a health check failed or took {args.health_max_s:g} s or more")
    for failure in failures:
        print(f"FAIL: {failure}")
    print("verdict:", "bound held" if not failures else "bound NOT held")
    return 1 if failures else 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-dir", type=Path, default=None, help="artefact (default: the champion)")
    parser.add_argument("--requests", type=int, default=20, help="30 MB requests to the transformer")
    parser.add_argument("--events", type=int, default=100, help="~8 MB events to the detector")
    parser.add_argument("--concurrency", type=int, default=10, help="concurrent senders to the transformer")
    parser.add_argument("--transformer-rss-mb", type=float, default=512.0)
    parser.add_argument("--detector-rss-mb", type=float, default=512.0)
    parser.add_argument("--health-max-s", type=float, default=1.0)
    return run(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
