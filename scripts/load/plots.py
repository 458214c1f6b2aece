"""PNG plots of the soak: memory and descriptors per component over time, latency percentiles over time."""

from __future__ import annotations

from pathlib import Path

from scripts.load.procstats import MIB, Sampler


def _pyplot():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def plot_resources(sampler: Sampler, path: Path, title: str) -> None:
    plt = _pyplot()
    figure, (memory, fds) = plt.subplots(2, 1, figsize=(9, 6.5), sharex=True)
    for name in sampler.components():
        samples = sampler.of(name)
        minutes = [s.t / 60 for s in samples]
        memory.plot(minutes, [s.rss_bytes / MIB for s in samples], label=name)
        fds.plot(minutes, [s.fds for s in samples], label=name)
    memory.set_ylabel("resident memory (MiB)")
    memory.set_ylim(bottom=0)
    memory.legend(loc="lower right", fontsize="small")
    memory.grid(alpha=0.3)
    fds.set_ylabel("open file descriptors")
    fds.set_ylim(bottom=0)
    fds.set_xlabel("minutes")
    fds.grid(alpha=0.3)
    memory.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_latency(points: list[dict[str, float]], path: Path, title: str, target_ms: float = 100.0) -> None:
    plt = _pyplot()
    figure, (latency, rate) = plt.subplots(
        2, 1, figsize=(9, 6), sharex=True, gridspec_kw={"height_ratios": [2, 1]}
    )
    minutes = [p["t"] / 60 for p in points]
    for key in ("p50", "p95", "p99"):
        latency.plot(minutes, [p[key] for p in points], label=key)
    latency.axhline(target_ms, color="grey", linestyle="--", linewidth=1, label=f"{target_ms:g} ms target")
    latency.set_ylabel("latency (ms, 10 s window)")
    latency.set_ylim(bottom=0)
    latency.legend(loc="upper right", fontsize="small")
    latency.grid(alpha=0.3)
    latency.set_title(title)
    rate.plot(minutes, [p["rps"] for p in points], label="requests/s")
    rate.plot(minutes, [p["failures_s"] for p in points], label="failures/s", color="red")
    rate.set_ylabel("per second")
    rate.set_xlabel("minutes")
    rate.set_ylim(bottom=0)
    rate.legend(loc="lower right", fontsize="small")
    rate.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
