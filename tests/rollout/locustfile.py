"""locust users of the canary rehearsal: v1 predictions of real customers, split between two stacks.

The split plays Knative's: each request goes to the canary with the current percentage, read from the
JSON file the rehearsal's actuator rewrites (REHEARSAL_ROUTE: {"stable", "canary", "percent"}), re-read
when it changes. Each user sends REHEARSAL_RATE requests/s of REHEARSAL_BATCH customers; requests are
named by side, so locust's summary counts each.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

from locust import HttpUser, constant_throughput, task

ROUTE = Path(os.environ["REHEARSAL_ROUTE"])
CUSTOMERS: list[dict[str, Any]] = json.loads(Path(os.environ["REHEARSAL_CUSTOMERS"]).read_text())
BATCH = int(os.environ.get("REHEARSAL_BATCH", "5"))


class Route:
    """The split, re-read whenever the file's mtime moves."""

    def __init__(self) -> None:
        self.mtime = 0.0
        self.document: dict[str, Any] = {}

    def current(self) -> dict[str, Any]:
        mtime = ROUTE.stat().st_mtime
        if mtime != self.mtime:
            self.document, self.mtime = json.loads(ROUTE.read_text()), mtime
        return self.document


ROUTE_STATE = Route()


class Customer(HttpUser):
    wait_time = constant_throughput(float(os.environ.get("REHEARSAL_RATE", "10")))

    @task
    def predict(self) -> None:
        route = ROUTE_STATE.current()
        canary = route.get("canary") and random.random() * 100 < route["percent"]
        base = route["canary"] if canary else route["stable"]
        customers = random.sample(CUSTOMERS, BATCH)
        self.client.post(
            f"{base}/v1/models/churn:predict",
            json={"instances": customers},
            name="canary" if canary else "stable",
        )
