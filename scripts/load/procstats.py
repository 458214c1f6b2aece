"""Resident memory, open file descriptors and CPU time of every process of the stack, sampled over time.

A component is its process and every descendant (the transformer's worker processes, MLServer's), read
with psutil (what locust itself depends on). A leak shows as a slope: `growth()` fits a least-squares line
through the samples after the warm-up and reports it per hour, next to the first and last values.
"""

from __future__ import annotations

import csv
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import psutil

MIB = 1024 * 1024


@dataclass(frozen=True)
class Sample:
    t: float  # seconds since the sampler started
    component: str
    processes: int
    rss_bytes: int
    fds: int
    cpu_s: float  # user + system CPU seconds of the live processes so far


def sample_tree(pid: int) -> tuple[int, int, int, float]:
    """(processes, rss bytes, open fds, cpu seconds) of `pid` and its descendants; zeros if it is gone."""
    try:
        root = psutil.Process(pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0, 0, 0, 0.0
    count, rss, fds, cpu = 0, 0, 0, 0.0
    for process in tree:
        try:
            with process.oneshot():
                rss += process.memory_info().rss
                fds += process.num_fds()
                times = process.cpu_times()
                cpu += times.user + times.system
            count += 1
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return count, rss, fds, cpu


class Sampler:
    """Samples the components every `interval_s` in a daemon thread; `pids` is read at each sample, so a
    restarted component is followed under its new pid."""

    def __init__(self, pids: Callable[[], Mapping[str, int]], interval_s: float = 5.0) -> None:
        self.pids = pids
        self.interval_s = interval_s
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="procstats", daemon=True)
        self._start = 0.0

    def __enter__(self) -> Sampler:
        self._start = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop sampling (idempotent): call it when the load ends, so idle samples do not bend the trend."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(self.interval_s + 5)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.take()
            self._stop.wait(self.interval_s)

    def take(self) -> None:
        now = time.monotonic() - self._start
        for name, pid in self.pids().items():
            count, rss, fds, cpu = sample_tree(pid)
            if count:
                self.samples.append(Sample(now, name, count, rss, fds, cpu))

    def components(self) -> list[str]:
        return list(dict.fromkeys(s.component for s in self.samples))

    def of(self, component: str) -> list[Sample]:
        return [s for s in self.samples if s.component == component]

    def write_csv(self, path: Path) -> None:
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["t_s", "component", "processes", "rss_mib", "fds", "cpu_s"])
            for s in self.samples:
                writer.writerow(
                    [
                        f"{s.t:.1f}",
                        s.component,
                        s.processes,
                        f"{s.rss_bytes / MIB:.2f}",
                        s.fds,
                        f"{s.cpu_s:.2f}",
                    ]
                )


def slope_per_hour(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (t seconds, value) points, per hour; 0 with fewer than 3 points."""
    if len(points) < 3:
        return 0.0
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var == 0:
        return 0.0
    return sum((t - mean_t) * (v - mean_v) for t, v in points) / var * 3600


@dataclass(frozen=True)
class Growth:
    component: str
    processes: int
    span_s: float  # the steady part the trend is fitted over
    rss_first_mib: float
    rss_last_mib: float
    rss_max_mib: float
    rss_slope_mib_per_h: float
    fds_first: int
    fds_last: int
    fds_max: int
    fds_slope_per_h: float
    cpu_cores: float  # mean CPU use over the samples, in cores


def growth(samples: list[Sample], warmup_s: float) -> Growth | None:
    """Memory and descriptor trend of one component after the warm-up."""
    if not samples:
        return None
    steady = [s for s in samples if s.t >= warmup_s] or samples
    first, last = steady[0], steady[-1]
    span = samples[-1].t - samples[0].t
    return Growth(
        component=samples[0].component,
        processes=last.processes,
        span_s=last.t - first.t,
        rss_first_mib=first.rss_bytes / MIB,
        rss_last_mib=last.rss_bytes / MIB,
        rss_max_mib=max(s.rss_bytes for s in steady) / MIB,
        rss_slope_mib_per_h=slope_per_hour([(s.t, s.rss_bytes / MIB) for s in steady]),
        fds_first=first.fds,
        fds_last=last.fds,
        fds_max=max(s.fds for s in steady),
        fds_slope_per_h=slope_per_hour([(s.t, float(s.fds)) for s in steady]),
        cpu_cores=(samples[-1].cpu_s - samples[0].cpu_s) / span if span > 0 else 0.0,
    )
