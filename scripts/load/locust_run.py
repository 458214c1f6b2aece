"""Run locust headless as a subprocess (its own CSV and HTML reports) and read its figures back.

A subprocess, not locust embedded: locust monkey-patches the standard library with gevent on import, and
a process of its own can be pinned to a core of its own (`taskset`) and measured on its own (its CPU use
tells when the load generator, not the service, is the bottleneck).
"""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[2]
LOCUSTFILE = REPO / "scripts" / "load" / "locustfile.py"
# Requests/s per locust user. A user waits for each answer, so it falls behind once latency passes
# 1 / rate: at 10/s a 150 ms p50 capped 10 users at ~67 requests/s (measured) although the service kept
# up. At 2/s a user keeps its pace up to 500 ms, and 50 greenlets per 100 requests/s cost locust little.
PER_USER_RATE = 2.0


@dataclass(frozen=True)
class Row:
    """One line of locust's *_stats.csv (a request kind, or "Aggregated")."""

    name: str
    requests: int
    failures: int
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float


@dataclass
class LocustResult:
    command: list[str]
    prefix: Path
    exit_code: int
    rows: dict[str, Row] = field(default_factory=dict)
    cpu_cores: float = 0.0  # the locust process's mean CPU use during the run, in cores
    achieved_rps: float = 0.0  # requests/s actually sent (achieved_rate)
    failures: list[dict[str, str]] = field(default_factory=list)

    @property
    def total(self) -> Row:
        return self.rows["Aggregated"]

    @property
    def html(self) -> Path:
        return self.prefix.with_suffix(".html")


def users_for(rate: float, per_user: float = PER_USER_RATE) -> tuple[int, float]:
    """Users and per-user rate that make `rate` requests/s in total."""
    users = max(1, math.ceil(rate / per_user))
    return users, rate / users


def run_locust(
    host: str,
    rate: float,
    seconds: float,
    prefix: Path,
    *,
    detector_host: str = "",
    api_key: str = "",
    mix: str = "",
    cpus: str | None = None,
    reset_stats: bool = False,
    quiet: bool = True,
) -> LocustResult:
    """Send the mix at `rate` requests/s for `seconds`; reports at `prefix`_*.csv and `prefix`.html."""
    prefix.parent.mkdir(parents=True, exist_ok=True)
    users, per_user = users_for(rate)
    command = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", host,
        "-u", str(users), "-r", str(users), "-t", f"{max(1, round(seconds))}s", "--stop-timeout", "10",
        "--user-rate", f"{per_user:.4f}", "--csv", str(prefix), "--csv-full-history",
        "--html", str(prefix.with_suffix(".html")), "--loglevel", "WARNING",
    ]  # fmt: skip
    if quiet:
        command.append("--only-summary")
    if reset_stats:
        command.append("--reset-stats")
    if detector_host:
        command += ["--detector-host", detector_host]
    if mix:
        command += ["--mix", mix]
    if cpus:
        command = ["taskset", "-c", cpus, *command]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if api_key:
        env["LOCUST_API_KEY"] = api_key  # not on the command line, where `ps` shows it
    log = prefix.parent / f"{prefix.name}.locust.log"
    started = time.monotonic()
    with log.open("wb") as output:
        process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)
        cpu = _cpu_seconds(process.pid)
        while process.poll() is None:
            cpu = max(cpu, _cpu_seconds(process.pid))
            time.sleep(0.5)
    wall = time.monotonic() - started
    result = LocustResult(command, prefix, process.returncode, cpu_cores=cpu / wall if wall else 0.0)
    result.rows = read_stats(Path(f"{prefix}_stats.csv"))
    result.failures = _read_csv(Path(f"{prefix}_failures.csv"))
    result.achieved_rps = achieved_rate(prefix)
    if "Aggregated" not in result.rows:
        raise RuntimeError(f"locust wrote no statistics; see {log}:\n{log.read_text()[-2000:]}")
    return result


def _cpu_seconds(pid: int) -> float:
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.NoSuchProcess:
        return 0.0
    return float(times.user + times.system)


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _number(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        return float("nan")  # "N/A" when a kind had no request


def read_stats(path: Path) -> dict[str, Row]:
    rows = {}
    for line in _read_csv(path):
        rows[line["Name"]] = Row(
            name=line["Name"],
            requests=int(line["Request Count"]),
            failures=int(line["Failure Count"]),
            rps=_number(line["Requests/s"]),
            p50_ms=_number(line["50%"]),
            p95_ms=_number(line["95%"]),
            p99_ms=_number(line["99%"]),
            max_ms=_number(line["Max Response Time"]),
            mean_ms=_number(line["Average Response Time"]),
        )
    return rows


def history(prefix: Path) -> list[dict[str, float]]:
    """Aggregated rows of *_stats_history.csv: time (s from the first row), rps, failures/s, p50/p95/p99
    over locust's 10-second sliding window."""
    out: list[dict[str, float]] = []
    first = None
    for line in _read_csv(Path(f"{prefix}_stats_history.csv")):
        if line["Name"] != "Aggregated" or line["95%"] in ("N/A", ""):
            continue
        stamp = float(line["Timestamp"])
        first = stamp if first is None else first
        out.append(
            {
                "t": stamp - first,
                "rps": _number(line["Requests/s"]),
                "failures_s": _number(line["Failures/s"]),
                "p50": _number(line["50%"]),
                "p95": _number(line["95%"]),
                "p99": _number(line["99%"]),
            }
        )
    return out


def achieved_rate(prefix: Path) -> float:
    """Requests/s actually sent, from the growth of the total count in *_stats_history.csv (one row a
    second). locust's own Requests/s divides by a span that starts before the first request (measured
    5-7 % under the sent rate on 15-second steps), so it cannot decide whether a rate was held."""
    points = [
        (float(line["Timestamp"]), int(line["Total Request Count"]))
        for line in _read_csv(Path(f"{prefix}_stats_history.csv"))
        if line["Name"] == "Aggregated" and int(line["Total Request Count"]) > 0
    ]
    if len(points) < 2 or points[-1][0] <= points[0][0]:
        return float("nan")
    return (points[-1][1] - points[0][1]) / (points[-1][0] - points[0][0])


def table(result: LocustResult) -> list[str]:
    """Markdown table of the run, one line per request kind and the total."""
    lines = [
        "| request kind | requests | failures | req/s | p50 ms | p95 ms | p99 ms | max ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    names = [*sorted(n for n in result.rows if n != "Aggregated"), "Aggregated"]
    for name in names:
        r = result.rows[name]
        lines.append(
            f"| {'all' if name == 'Aggregated' else name} | {r.requests:,} | {r.failures} | {r.rps:.1f} "
            f"| {r.p50_ms:.0f} | {r.p95_ms:.0f} | {r.p99_ms:.0f} | {r.max_ms:.0f} |"
        )
    return lines
