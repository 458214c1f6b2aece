"""Serving benchmark (`make bench`): the transformer -> predictor path against two echo references.

In one run, on 127.0.0.1, one after the other, wrk (32 connections, a POST body from a Lua script) drives:
1. `churn` — the full v2 path: transformer (validation, encoding, reason codes, decisions, metrics, JSON
   logs) -> gRPC v2 -> MLServer's sklearn runtime, exactly as `churnops serve` runs them;
2. `kserve-echo` — a KServe ModelServer hosting an echo model: the same v2 request, a constant answer, no
   predictor hop (what KServe's own request handling costs);
3. `fastapi-echo` — a bare FastAPI app validating the same 19-field pydantic model (built from the
   contract), constant answer.
Then the latency of one v2 request of 1,000 customers through the full path. Prints a table with req/s,
p50/p95/p99 and the ratios; writes reports/bench_serving.json. The machine's cores are shared by wrk and
the servers: read the numbers as relative. Usage: python scripts/bench_serving.py [--duration 15] [...]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "model"), str(REPO / "transformer")]

WRK_SCRIPT = """
wrk.method = "POST"
local f = io.open(os.getenv("BENCH_BODY"), "rb")
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH {\\"requests\\": %d, \\"duration_us\\": %d, \\"errors\\": %d, \\"non2xx\\": %d, " ..
    "\\"p50\\": %d, \\"p95\\": %d, \\"p99\\": %d}\\n",
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(95), latency:percentile(99)))
end
"""

CHURN = "churn (v2: transformer -> gRPC -> MLServer)"
KSERVE_ECHO = "kserve-echo (v2, no predictor hop)"
FASTAPI_ECHO = "fastapi-echo (19-field pydantic)"

CUSTOMER = {
    "customerID": "7590-VHVEG", "gender": "Female", "SeniorCitizen": 0, "Partner": "Yes", "Dependents": "No",
    "tenure": 1, "PhoneService": "No", "MultipleLines": "No phone service", "InternetService": "DSL",
    "OnlineSecurity": "No", "OnlineBackup": "Yes", "DeviceProtection": "No", "TechSupport": "No",
    "StreamingTV": "No", "StreamingMovies": "No", "Contract": "Month-to-month", "PaperlessBilling": "Yes",
    "PaymentMethod": "Electronic check", "MonthlyCharges": 29.85, "TotalCharges": 29.85,
}  # fmt: skip


def v2_body(customers: list[dict[str, Any]], contract: Any) -> dict[str, Any]:
    kinds = {spec.name: spec.kind for spec in contract.fields}
    datatype = {"category": "BYTES", "integer": "INT64", "number": "FP64"}
    inputs = [
        {
            "name": name,
            "datatype": datatype[kinds[name]] if name in kinds else "BYTES",
            "shape": [len(customers)],
            "data": [c[name] for c in customers],
        }
        for name in customers[0]
    ]
    return {"inputs": inputs}


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---- reference servers (run as subprocesses of this script) ---------------------------------------------


def serve_kserve_echo(port: int) -> None:
    from kserve import Model, ModelServer
    from kserve.protocol.infer_type import InferOutput, InferResponse
    from kserve.protocol.rest.server import RESTServer

    class Echo(Model):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__("churn")
            self.ready = True

        async def predict(self, payload: Any, headers: Any = None, response_headers: Any = None) -> Any:
            return InferResponse(
                response_id=payload.id or "echo",
                model_name="churn",
                infer_outputs=[InferOutput("churn_probability", [1], "FP64", [0.5])],
            )

    class LoopbackRESTServer(RESTServer):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.config.host = "127.0.0.1"  # KServe binds 0.0.0.0; benchmarks stay on loopback

    from kserve import model_server

    model_server.RESTServer = LoopbackRESTServer  # type: ignore[misc]
    server = ModelServer(http_port=port, enable_grpc=False, workers=1, enable_latency_logging=False)
    import logging

    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    logging.getLogger("kserve.trace").setLevel(logging.WARNING)
    server.start([Echo()])


def serve_fastapi_echo(port: int, artefact: Path) -> None:
    import uvicorn
    from fastapi import FastAPI
    from pydantic import create_model

    from churn_core.contract import FeatureContract
    from churn_transformer.validation import customer_model

    customer = customer_model(FeatureContract.load(artefact))
    body_model = create_model("Body", instances=(list[customer], ...))  # type: ignore[valid-type]
    app = FastAPI()

    async def echo(body: Any) -> dict[str, Any]:
        return {"predictions": [{"churn_probability": 0.5}]}

    echo.__annotations__["body"] = body_model  # a class made at run time (postponed annotations)
    app.post("/v1/models/churn:predict")(echo)

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


# ---- the run ---------------------------------------------------------------------------------------------


def wrk(
    url: str, body: Path, duration: int, connections: int, threads: int, script: Path
) -> dict[str, float]:
    env = {**os.environ, "BENCH_BODY": str(body)}
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "-s", str(script), url]
    output = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    match = re.search(r"^BENCH (\{.*\})$", output, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"wrk printed no summary:\n{output}")
    raw = json.loads(match.group(1))
    return {
        "rps": raw["requests"] / (raw["duration_us"] / 1e6),
        "p50_ms": raw["p50"] / 1000,
        "p95_ms": raw["p95"] / 1000,
        "p99_ms": raw["p99"] / 1000,
        "errors": raw["errors"] + raw["non2xx"],
        "requests": raw["requests"],
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=15, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--workers", type=int, default=1, help="transformer worker processes")
    parser.add_argument("--batch-requests", type=int, default=30, help="requests of 1,000 customers")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; medians are reported")
    parser.add_argument("--serve", choices=["kserve-echo", "fastapi-echo"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--artefact", type=Path, help="artefact directory (default: the champion's)")
    return parser.parse_args()


def echo_component(mode: str, port: int, artefact: Path, scratch: Path) -> Any:
    """One of the reference servers (this script with --serve), as a stack component."""
    from churnops.stack import Component

    ready = "/v2/health/live" if mode == "kserve-echo" else "/docs"
    return Component(
        name=mode,
        argv=(sys.executable, __file__, "--serve", mode, "--port", str(port), "--artefact", str(artefact)),
        ready_url=f"http://127.0.0.1:{port}{ready}",
        env={"OMP_NUM_THREADS": "1"},
        log_file=scratch / f"{mode}.log",
    )


def time_big_batches(url: str, body: bytes, requests: int) -> dict[str, float]:
    """Median, p95 and max of `requests` posts of a 1,000-customer body, after 3 warm-up posts."""
    import httpx

    timings = []
    with httpx.Client(timeout=30) as client:
        for _ in range(3):
            client.post(url, content=body, headers={"content-type": "application/json"})
        for _ in range(requests):
            started = time.perf_counter()
            response = client.post(url, content=body, headers={"content-type": "application/json"})
            timings.append((time.perf_counter() - started) * 1000)
            response.raise_for_status()
    timings.sort()
    return {
        "median_ms": statistics.median(timings),
        "p95_ms": timings[int(0.95 * (len(timings) - 1))],
        "max_ms": timings[-1],
    }


def main() -> int:
    args = parse_args()
    if args.serve == "kserve-echo":
        serve_kserve_echo(args.port)
        return 0
    if args.serve == "fastapi-echo":
        serve_fastapi_echo(args.port, args.artefact)
        return 0

    import orjson

    from churn_core.contract import FeatureContract
    from churnops.stack import ServingPorts, running_stack, serving_stack

    artefact, version = resolve_artefact(args.artefact)
    contract = FeatureContract.load(artefact)
    predictor_python = Path(
        os.environ.get("CHURNOPS_STACK_PREDICTOR_PYTHON", REPO / ".venv-predictor/bin/python")
    )
    runs: dict[str, list[dict[str, float]]] = {}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="churn-bench-") as scratch_name:
        scratch = Path(scratch_name)
        script = scratch / "post.lua"
        script.write_text(WRK_SCRIPT, encoding="utf-8")
        v2_one = scratch / "v2.json"
        v2_one.write_bytes(orjson.dumps(v2_body([CUSTOMER], contract)))
        v1_one = scratch / "v1.json"
        v1_one.write_bytes(orjson.dumps({"instances": [CUSTOMER]}))

        ports = ServingPorts(free_port(), free_port(), free_port(), free_port())
        components = [
            component.logging_to(scratch / f"{component.name}.log")
            for component in serving_stack(artefact, version, predictor_python, ports, workers=args.workers)
        ]
        echo_ports = {"kserve-echo": free_port(), "fastapi-echo": free_port()}
        components += [echo_component(mode, port, artefact, scratch) for mode, port in echo_ports.items()]
        targets = {
            CHURN: (f"http://127.0.0.1:{ports.transformer}/v2/models/churn/infer", v2_one),
            KSERVE_ECHO: (f"http://127.0.0.1:{echo_ports['kserve-echo']}/v2/models/churn/infer", v2_one),
            FASTAPI_ECHO: (f"http://127.0.0.1:{echo_ports['fastapi-echo']}/v1/models/churn:predict", v1_one),
        }
        print(
            f"churn model {version}: transformer workers={args.workers}; wrk {args.connections} connections, "
            f"{args.threads} threads, {args.duration} s x {args.rounds} rounds, targets alternating"
        )
        with running_stack(components, log=lambda _: None):
            for url, body_file in targets.values():  # warm-up
                wrk(url, body_file, 2, args.connections, args.threads, script)
            for round_number in range(args.rounds):
                for name, (url, body_file) in targets.items():
                    result = wrk(url, body_file, args.duration, args.connections, args.threads, script)
                    runs.setdefault(name, []).append(result)
                    print(
                        f"  round {round_number + 1}: {name}: {result['rps']:,.0f} req/s, p95 {result['p95_ms']:.1f} ms"
                    )
            big = orjson.dumps(v2_body([CUSTOMER] * 1000, contract))
            batch = time_big_batches(targets[CHURN][0], big, args.batch_requests)
    results = {
        name: {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
        for name, rounds in runs.items()
    }
    report(results, batch, args, {"before": load_before, "after": os.getloadavg()}, artefact)
    return 0


def resolve_artefact(explicit: Path | None) -> tuple[Path, str]:
    from churn_core.contract import FeatureContract

    if explicit is not None:
        return explicit, FeatureContract.load(explicit).model.version
    from churn_model.pipeline import export_version
    from churn_model.registry import Registry
    from churn_model.settings import get_settings

    registry = Registry(get_settings())
    if not registry.has_versions():
        raise SystemExit("no registered model: run `make train` (or `churnops train`) first")
    info = registry.resolve("champion")
    return export_version(registry, info.version), info.version


def report(
    results: dict[str, dict[str, float]],
    batch: dict[str, float],
    args: argparse.Namespace,
    load: dict[str, tuple[float, float, float]],
    artefact: Path,
) -> None:
    churn, echo, fastapi = results[CHURN], results[KSERVE_ECHO], results[FASTAPI_ECHO]
    print()
    print(f"command: python scripts/bench_serving.py {' '.join(sys.argv[1:])}".rstrip())
    print(
        f"medians of {args.rounds} rounds; load average (1 min) before {load['before'][0]:.2f}, "
        f"after {load['after'][0]:.2f} on {os.cpu_count()} cores"
    )
    print("| path | req/s | p50 ms | p95 ms | p99 ms | errors |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        print(
            f"| {name} | {r['rps']:,.0f} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['p99_ms']:.1f} "
            f"| {int(r['errors'])} |"
        )
    ratio = churn["rps"] / echo["rps"]
    print()
    print(
        f"churn / kserve-echo req/s: {ratio:.2f}x (goal >= 0.5x)   p95 {churn['p95_ms']:.1f} ms (goal <= 50 ms)"
    )
    print(f"churn / fastapi-echo req/s: {churn['rps'] / fastapi['rps']:.2f}x")
    print(
        f"v2 batch of 1,000 customers: median {batch['median_ms']:.1f} ms, p95 {batch['p95_ms']:.1f} ms, "
        f"max {batch['max_ms']:.1f} ms (goal <= 50 ms)"
    )
    out = REPO / "reports" / "bench_serving.json"
    out.parent.mkdir(exist_ok=True)
    document = {
        "settings": {k: v for k, v in vars(args).items() if k not in ("serve", "port")}
        | {"artefact": str(artefact)},
        "load_average": load,
        "wrk": results,
        "batch_1000": batch,
    }
    out.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    print(f"\nwritten to {out.relative_to(REPO)}")


if __name__ == "__main__":
    sys.exit(main())
