"""Locust scenario: the request mix of real ChurnOps clients, against any endpoint.

    locust -f scripts/load/locustfile.py --host http://127.0.0.1:8080 --headless -u 50 -t 2m \
        --user-rate 2 --csv reports/load/run --html reports/load/run.html

Each user sends `--user-rate` requests per second on a fixed schedule, so `-u N` users make
N x rate requests/s for as long as the service keeps up (a user whose request takes longer than 1/rate
falls behind: the achieved rate then shows the service is saturated). The mix (payloads.DEFAULT_MIX,
change it with `--mix v2_single=60,feedback=0`): v2 single customer, v2 batches of 10 and 100, v1 single,
feedback labels to the detector, and ~5 % invalid requests, which count as a success only when refused
with a 4xx. Requests are named by kind (`v2_single`, ...), so the reports break latency down per kind.

Options of ours (also as environment variables):
- `--api-key` / LOCUST_API_KEY: sent as `Authorization: Bearer <key>` (through the authorizer; the
  key needs the `predict` and `feedback` scopes for the whole mix);
- `--detector-host` / LOCUST_DETECTOR_HOST: where feedback goes (default: `--host`, as through a
  gateway that routes /feedback to the detector);
- `--model-name` (default churn), `--user-rate`, `--mix`, `--seed`.
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path
from typing import Any

from locust import FastHttpUser, events, task

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # `scripts.load` when run by path

from scripts.load.payloads import RequestMix, parse_mix

_MIX: dict[str, RequestMix] = {}


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    parser.add_argument(
        "--api-key", default="", env_var="LOCUST_API_KEY", is_secret=True, help="API key (Bearer)"
    )
    parser.add_argument(
        "--detector-host", default="", env_var="LOCUST_DETECTOR_HOST", help="feedback goes here"
    )
    parser.add_argument("--model-name", default="churn", help="model name in the inference paths")
    parser.add_argument("--user-rate", type=float, default=1.0, help="requests per second per user")
    parser.add_argument("--mix", default="", help="weights, e.g. v2_single=60,feedback=0")
    parser.add_argument("--seed", type=int, default=7, help="seed of the customers and the mix")


def _mix(options: Any) -> RequestMix:
    key = f"{options.mix}|{options.model_name}|{options.seed}"
    if key not in _MIX:
        _MIX[key] = RequestMix(parse_mix(options.mix), model=options.model_name, seed=options.seed)
    return _MIX[key]


class ChurnClient(FastHttpUser):
    """One client application: `--user-rate` requests a second, drawn from the mix."""

    _next_at = 0.0

    def wait_time(self) -> float:
        """Requests on a fixed schedule, t0 + k / rate. locust's constant_throughput waits `period - run
        time` from the end of each task, so every timer overshoot is lost for good: measured ~5 % short at
        10 requests/s per user on a busy machine. A user that falls behind catches up for at most a second
        (then the schedule restarts from now): past that the service is saturated and a burst would only
        hide it."""
        now = time.perf_counter()
        period = 1.0 / self.environment.parsed_options.user_rate
        if not self._next_at:  # a random phase: users spawned together must not fire together
            self._next_at = now + random.uniform(0.0, period)
        else:
            self._next_at = max(self._next_at + period, now - 1.0)
        return max(0.0, self._next_at - now)

    def on_start(self) -> None:
        options = self.environment.parsed_options
        self.mix = _mix(options)
        self.auth = {"authorization": f"Bearer {options.api_key}"} if options.api_key else {}
        detector = options.detector_host.rstrip("/")
        self.detector = detector if detector and detector != (self.host or "").rstrip("/") else ""

    @task
    def send(self) -> None:
        planned = self.mix.next()
        url = planned.path
        if planned.target == "detector" and self.detector:
            url = self.detector + planned.path
        headers = {**planned.headers, **self.auth}
        with self.client.post(
            url, data=planned.body, headers=headers, name=planned.kind, catch_response=True
        ) as response:
            status = response.status_code or 0
            if planned.expect_4xx:
                if 400 <= status < 500:
                    response.success()
                else:
                    response.failure(f"invalid request answered {status}, expected a 4xx")
            elif status != 200:
                # status 0: no HTTP answer; the connection error says what happened instead of a body.
                detail = getattr(response, "error", None) or (response.text or "")[:200]
                response.failure(f"HTTP {status}: {detail!r}" if status == 0 else f"HTTP {status}: {detail}")
