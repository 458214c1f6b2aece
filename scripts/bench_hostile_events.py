"""The detector's memory bound under hostile payload logs, measured: 100 events of about 8 MB each go to a
real detector process (some chunked, without Content-Length) from concurrent senders, while its resident
memory is sampled and /healthz is polled; prints RSS (start, max) and health latency (max, p99), and exits
1 when a 5xx was answered, /healthz took a second or more, or RSS passed `--rss-limit-mb`.

The events, in equal parts (each about 8 MB, the cap `CHURNOPS_DETECTOR_MAX_EVENT_BYTES`):
- requests of 1,000 customers padded with an 8 KB field the contract does not know: accepted, never
  answered, so they wait in the join (bounded by `CHURNOPS_DETECTOR_JOIN_MAX_BYTES`);
- bodies of 9 MB sent chunked: refused with 413 while reading;
- `[[],[],...]` (2.8 million empty arrays, 56 bytes each once parsed): refused with 413 before parsing;
- arrays nested 10,000 deep, then 8 MB of padding: refused with 400 before parsing.

    .venv/bin/python scripts/bench_hostile_events.py                       # latest artefact, scipy backend
    .venv/bin/python scripts/bench_hostile_events.py --python .venv-drift/bin/python --backend alibi
    .venv/bin/python scripts/bench_hostile_events.py --events 400 --join-max-mb 16   # the join's bound at work
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
MB = 1 << 20
EVENT_BYTES = 8 * MB
KINDS = ("unanswered-request", "chunked-oversize", "empty-arrays", "deep-nesting")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def latest_artefact() -> Path:
    models = sorted(
        (REPO / ".churnops" / "models").glob("*"), key=lambda p: int(p.name) if p.name.isdigit() else 0
    )
    if not models:
        sys.exit("no artefact under .churnops/models: run `make train` or pass --model-dir")
    return models[-1]


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


CUSTOMER = {
    "gender": "Female",
    "SeniorCitizen": 0,
    "Partner": "Yes",
    "Dependents": "No",
    "tenure": 1,
    "PhoneService": "No",
    "MultipleLines": "No phone service",
    "InternetService": "DSL",
    "OnlineSecurity": "No",
    "OnlineBackup": "Yes",
    "DeviceProtection": "No",
    "TechSupport": "No",
    "StreamingTV": "No",
    "StreamingMovies": "No",
    "Contract": "Month-to-month",
    "PaperlessBilling": "Yes",
    "PaymentMethod": "Electronic check",
    "MonthlyCharges": 29.85,
    "TotalCharges": 29.85,
}


def bodies() -> dict[str, bytes]:
    """One body of each kind (the senders reuse them under fresh ce-ids: the bytes are what matters)."""
    padding = "x" * 7600
    customers = [{**CUSTOMER, "customerID": f"H-{i:05d}", "notes": padding} for i in range(1000)]
    request = json.dumps({"instances": customers}).encode()
    assert len(request) <= EVENT_BYTES, len(request)
    empties = b"[" + b"[]," * ((EVENT_BYTES - 8) // 3) + b"[]]"
    deep = b"[" * 10_000 + b" " * (EVENT_BYTES - 20_000) + b"]" * 10_000
    return {
        "unanswered-request": request,
        "chunked-oversize": b" " * (9 * MB),
        "empty-arrays": empties,
        "deep-nesting": deep,
    }


def chunked(body: bytes, size: int = 256 * 1024) -> Iterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


def headers(event_id: str) -> dict[str, str]:
    return {
        "ce-specversion": "1.0",
        "ce-id": event_id,
        "ce-type": "org.kubeflow.serving.inference.request",
        "ce-source": "http://hostile.example/",
        "content-type": "application/json",
    }


def send(client: httpx.Client, url: str, kind: str, body: bytes, index: int) -> tuple[str, int, str]:
    # Every other valid event and every oversize one is sent chunked: no Content-Length to trust.
    as_chunks = kind == "chunked-oversize" or index % 2 == 1
    content = chunked(body) if as_chunks else body
    try:
        response = client.post(url, content=content, headers=headers(f"hostile-{kind}-{index}"))
    except httpx.HTTPError as error:
        # The detector may close the connection once it has refused a body it stopped reading.
        return kind, 0, type(error).__name__
    code = response.json().get("code", response.json().get("status", "")) if response.content else ""
    return kind, response.status_code, str(code)


@dataclass
class Watch:
    name: str
    pid: int
    health_url: str
    rss: list[int] = field(default_factory=list)
    health: list[float] = field(default_factory=list)
    health_failures: int = 0


class Watcher:
    """Samples each process's RSS (with its children) and polls its health check until stopped."""

    def __init__(self, watches: list[Watch], rss_of: Callable[[int], int]) -> None:
        self.watches = watches
        self.rss_of = rss_of
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._sample_rss)]
        self._threads += [threading.Thread(target=self._poll, args=(w,)) for w in watches]

    def __enter__(self) -> Watcher:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _sample_rss(self) -> None:
        while not self._stop.wait(0.02):
            for watch in self.watches:
                watch.rss.append(self.rss_of(watch.pid))

    def _poll(self, watch: Watch) -> None:
        with httpx.Client(timeout=5.0) as client:
            while not self._stop.wait(0.05):
                started = time.perf_counter()
                try:
                    ok = client.get(watch.health_url).status_code == 200
                except httpx.HTTPError:
                    ok = False
                watch.health.append(time.perf_counter() - started)
                watch.health_failures += not ok


def start_detector(args: argparse.Namespace, home: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHURNOPS_")}
    env.update(
        {
            "CHURNOPS_DETECTOR_HOME": str(home),
            "CHURNOPS_DETECTOR_MODEL_DIR": str(args.model_dir),
            "CHURNOPS_DETECTOR_HOST": "127.0.0.1",
            "CHURNOPS_DETECTOR_PORT": str(port),
            "CHURNOPS_DETECTOR_DRIFT_BACKEND": args.backend,
            "OMP_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1",
        }
    )
    if args.join_max_mb is not None:
        env["CHURNOPS_DETECTOR_JOIN_MAX_BYTES"] = str(int(args.join_max_mb * MB))
    log = (home / "detector.log").open("wb")
    process = subprocess.Popen(
        [args.python, "-m", "churn_monitoring.service"], cwd=REPO, env=env, stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"detector exited with {process.returncode}; see {home / 'detector.log'}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.kill()
    sys.exit("detector not ready within 120 s")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-dir", type=Path, default=None, help="artefact (default: latest trained)")
    parser.add_argument("--python", default=sys.executable, help="interpreter that runs the detector")
    parser.add_argument("--backend", default="scipy", help="drift backend (alibi needs .venv-drift)")
    parser.add_argument("--events", type=int, default=100, help="hostile events to send")
    parser.add_argument("--concurrency", type=int, default=16, help="concurrent senders")
    parser.add_argument("--rss-limit-mb", type=float, default=600.0, help="fail above this resident memory")
    parser.add_argument(
        "--join-max-mb",
        type=float,
        default=None,
        help="CHURNOPS_DETECTOR_JOIN_MAX_BYTES (default: its default)",
    )
    args = parser.parse_args()
    args.model_dir = args.model_dir or latest_artefact()
    templates = bodies()
    with tempfile.TemporaryDirectory(prefix="hostile-") as scratch:
        process, url = start_detector(args, Path(scratch))
        try:
            time.sleep(1.0)
            baseline = rss_bytes(process.pid)
            started = time.monotonic()
            watch = Watch("detector", process.pid, f"{url}/healthz")
            with Watcher([watch], rss_bytes), httpx.Client(timeout=120.0) as client:
                with ThreadPoolExecutor(args.concurrency) as pool:
                    jobs = [
                        pool.submit(send, client, f"{url}/events", KINDS[i % 4], templates[KINDS[i % 4]], i)
                        for i in range(args.events)
                    ]
                    outcomes = Counter((job.result()[0], job.result()[1], job.result()[2]) for job in jobs)
                time.sleep(1.0)
            elapsed = time.monotonic() - started
            ready = httpx.get(f"{url}/readyz", timeout=5).json()
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
    health = sorted(watch.health)
    p99 = health[int(0.99 * (len(health) - 1))] if health else float("nan")
    rss_max = max(watch.rss, default=baseline)
    print(f"detector: {args.python} ({args.backend} backend), {args.events} events of ~8 MB, {elapsed:.1f} s")
    for (kind, status, code), count in sorted(outcomes.items()):
        print(f"  {kind:20s} {status:3d} {code:24s} x{count}")
    held = ready.get("pending_bytes")  # an older detector does not report it
    estimate = f" ({held / MB:.1f} MB estimated)" if held is not None else ""
    print(f"pending halves after: {ready['pending_halves']}{estimate}")
    print(f"RSS start {baseline / MB:.0f} MB, max {rss_max / MB:.0f} MB (limit {args.rss_limit_mb:.0f} MB)")
    print(
        f"/healthz: {len(health)} polls, max {max(health, default=0) * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, "
        f"failures {watch.health_failures}"
    )
    failures = []
    if any(status >= 500 for _, status, _ in outcomes):
        failures.append("a 5xx was answered")
    if max(health, default=0) >= 1.0 or watch.health_failures:
        failures.append("/healthz did not answer within 1 s throughout")
    if rss_max > args.rss_limit_mb * MB:
        failures.append(f"RSS passed {args.rss_limit_mb:.0f} MB")
    for failure in failures:
        print(f"FAIL: {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
