"""How many KServe payload-log events per second the drift detector takes.

Starts the detector as its own process (as in the cluster: one uvicorn process), then posts request and
response CloudEvents (binary mode, exactly the headers KServe's agent sends) for customers of the artefact's
reference sample from `--concurrency` concurrent connections for `--seconds`, and reports accepted events/s,
post latency, joined rows/s and how long the store took to catch up. Drift windows are tested meanwhile.
wrk (Debian package) generates the load: the events come from a Lua script, one new ce-id per pair.

    .venv/bin/python scripts/bench_detector.py --seconds 20 --concurrency 32
    .venv/bin/python scripts/bench_detector.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/bench
    .venv/bin/python scripts/bench_detector.py --python .venv-drift/bin/python --backend alibi

It also samples the detector's resident memory every 5 s: on a long run (`--seconds 360 --batch 5`) its
bounded structures fill (de-duplication keys, the last drift reports, the join) and the memory must level
off, whatever the number of events (docs/operations/load.md, the soak's detector).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scripts.load.procstats import MIB, Sample, Sampler  # noqa: E402


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


def bodies(model_dir: Path, batch: int, count: int) -> list[tuple[bytes, bytes, int]]:
    """Request/response bodies in the transformer's v1 format from the reference sample."""
    with gzip.open(model_dir / "reference.json.gz", "rt") as handle:
        reference = json.load(handle)
    contract = json.loads((model_dir / "churn-contract.json").read_text())
    threshold = contract["model"]["threshold"]
    version = contract["model"]["version"]
    fields = reference["fields"]
    rows = len(reference["probabilities"])
    rng = random.Random(7)
    out = []
    for _ in range(count):
        picks = [rng.randrange(rows) for _ in range(batch)]
        customers = [
            {name: values[i] for name, values in fields.items()} | {"customerID": f"C{i}"} for i in picks
        ]
        answers = [
            {
                "customerID": f"C{i}",
                "churn_probability": reference["probabilities"][i],
                "churn_prediction": reference["probabilities"][i] >= threshold,
                "risk_level": "High" if reference["probabilities"][i] >= 0.5 else "Low",
                "recommended_action": "no action: standard engagement",
                "top_factors": [],
                "model_version": version,
            }
            for i in picks
        ]
        out.append(
            (
                json.dumps({"instances": customers}).encode(),
                json.dumps({"predictions": answers}).encode(),
                batch,
            )
        )
    return out


WRK_SCRIPT = r"""
-- Each request is one payload-log event: odd ones the request of a new call, even ones its response
-- (same ce-id), as KServe's agent posts them; the pair often lands on two connections, as in the cluster.
local pairs_file = io.open(os.getenv("BENCH_PAIRS"), "rb")
local pairs = {}
for line in pairs_file:lines() do
  local request, response = line:match("^(.-)	(.*)$")
  pairs[#pairs + 1] = {request, response}
end
pairs_file:close()
local counter = 0
local current = nil
local threads = 0
setup = function(thread)
  threads = threads + 1
  thread:set("thread_id", threads)  -- a global of that thread's Lua state: ids never collide
end
request = function()
  counter = counter + 1
  local kind, body
  if counter % 2 == 1 then
    current = string.format("%d-%d", thread_id, counter)
    kind, body = "request", pairs[(counter % #pairs) + 1][1]
  else
    kind, body = "response", pairs[((counter - 1) % #pairs) + 1][2]
  end
  local headers = {
    ["Ce-Specversion"] = "1.0", ["Ce-Id"] = current,
    ["Ce-Type"] = "org.kubeflow.serving.inference." .. kind,
    ["Ce-Source"] = "http://localhost:9081/", ["Ce-Time"] = os.date("!%Y-%m-%dT%H:%M:%SZ"),
    ["Ce-Inferenceservicename"] = "churn", ["Ce-Namespace"] = "churn", ["Ce-Component"] = "transformer",
    ["Ce-Endpoint"] = "default", ["Ce-Metadata"] = "{}", ["Content-Type"] = "application/json",
  }
  return wrk.format("POST", "/", headers, body)
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH {\"requests\": %d, \"duration_us\": %d, \"errors\": %d, \"non2xx\": %d, " ..
    "\"p50\": %d, \"p99\": %d}\n",
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99)))
end
"""


def load(
    url: str, pool: list[tuple[bytes, bytes, int]], seconds: float, concurrency: int, work: Path
) -> dict[str, Any]:
    """wrk drives the load (a Python client on the same two cores would measure itself)."""
    pairs = work / "pairs.tsv"
    pairs.write_bytes(b"".join(request + b"\t" + response + b"\n" for request, response, _ in pool))
    script = work / "events.lua"
    script.write_text(WRK_SCRIPT)
    threads = min(2, concurrency)
    result = subprocess.run(
        ["wrk", "-t", str(threads), "-c", str(concurrency), "-d", f"{seconds:.0f}s", "-s", str(script), url],
        env={**os.environ, "BENCH_PAIRS": str(pairs)},
        capture_output=True,
        text=True,
        check=True,
    )
    line = next(line for line in result.stdout.splitlines() if line.startswith("BENCH "))
    summary = json.loads(line.removeprefix("BENCH "))
    elapsed = summary["duration_us"] / 1e6
    events = summary["requests"] - summary["non2xx"] - summary["errors"]
    batch = pool[0][2]
    return {
        "seconds": elapsed,
        "events": events,
        "errors": summary["errors"] + summary["non2xx"],
        "events_per_second": events / elapsed,
        "rows_per_second": events / 2 * batch / elapsed,
        "latency_p50_ms": summary["p50"] / 1000,
        "latency_p99_ms": summary["p99"] / 1000,
    }


def rss_summary(samples: list[Sample]) -> dict[str, float]:
    """First, half-way, last and highest RSS (MiB): a leak grows in the second half, a fill does not."""
    rss = [sample.rss_bytes / MIB for sample in samples]
    return {"first": rss[0], "half_way": rss[len(rss) // 2], "last": rss[-1], "max": max(rss)}


def metric(base: str, sample: str) -> float:
    for line in httpx.get(f"{base}/metrics", timeout=10).text.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--batch", type=int, default=1, help="customers per logged call")
    parser.add_argument("--database-url", default=None, help="default: SQLite in a temporary directory")
    parser.add_argument("--python", default=sys.executable, help="interpreter of the detector")
    parser.add_argument("--backend", default="scipy", choices=["scipy", "alibi"])
    args = parser.parse_args()
    model_dir = (args.model_dir or latest_artefact()).resolve()
    pool = bodies(model_dir, args.batch, 500)
    port = free_port()
    home = Path(tempfile.mkdtemp(prefix="bench-detector-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHURNOPS_")}
    env.update(
        CHURNOPS_DETECTOR_HOME=str(home),
        CHURNOPS_DETECTOR_MODEL_DIR=str(model_dir),
        CHURNOPS_DETECTOR_DRIFT_BACKEND=args.backend,
        CHURNOPS_DETECTOR_PORT=str(port),
        CHURNOPS_DETECTOR_HOST="127.0.0.1",
        OMP_NUM_THREADS="1",
        OPENBLAS_NUM_THREADS="1",
    )
    if args.database_url:
        env["CHURNOPS_DETECTOR_DATABASE_URL"] = args.database_url
    log = (home / "detector.log").open("wb")
    process = subprocess.Popen(
        [args.python, "-m", "churn_monitoring.service"],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{base}/readyz", timeout=1).json().get("drift_detector"):
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None:
                sys.exit(f"detector exited: see {home / 'detector.log'}")
            time.sleep(0.1)
        with Sampler(lambda: {"detector": process.pid}) as memory:
            result = load(f"{base}/", pool, args.seconds, args.concurrency, home)
        result["detector_rss_mib"] = {k: round(v, 1) for k, v in rss_summary(memory.of("detector")).items()}
        drained = time.monotonic()
        while metric(base, "churn_store_backlog_rows") > 0 and time.monotonic() - drained < 120:
            time.sleep(0.2)
        result["store_catch_up_seconds"] = time.monotonic() - drained
        result["stored_rows"] = metric(base, 'churn_store_rows_total{outcome="inserted"}')
        result["joined_calls"] = metric(base, 'churn_payload_joins_total{outcome="joined"}')
        result["duplicate_events"] = sum(
            metric(base, f'churn_payload_events_total{{type="{t}",outcome="duplicate"}}')
            for t in ("request", "response")
        )
        result["windows_tested"] = sum(
            metric(base, f'churn_drift_windows_total{{outcome="{o}"}}') for o in ("drift", "no_drift")
        )
        result.update(
            concurrency=args.concurrency,
            batch=args.batch,
            backend=args.backend,
            store="postgresql" if args.database_url else "sqlite",
            cpus=os.cpu_count(),
        )
        print(json.dumps(result, indent=2))
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


if __name__ == "__main__":
    main()
