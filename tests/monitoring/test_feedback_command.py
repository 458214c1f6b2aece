"""`churnops feedback` through the authorizer: the key from CHURNOPS_DETECTOR_API_KEY goes out as
`Authorization: Bearer` (the header the authorizer reads, churn_authorizer.app.presented_key) and is
never printed, whatever the answer."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from churn_authorizer.app import presented_key
from tests.support.services import REPO, free_port

KEY = "ck_live_0123456789abcdef-never-printed"
CHURNOPS = Path(sys.executable).parent / "churnops"


@contextlib.contextmanager
def authorizing_detector() -> Iterator[tuple[str, list[dict[str, str]]]]:
    """A stand-in for the detector behind the authorizer: 401 without the key, a result with it."""
    seen: list[dict[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            labels = json.loads(self.rfile.read(int(self.headers["content-length"])))["labels"]
            headers = {k.lower(): v for k, v in self.headers.items()}
            seen.append(headers)
            if presented_key(headers) != KEY:
                status, body = 401, {"error": "missing API key", "code": "missing_api_key"}
            else:
                status = 200
                body = {
                    "received": len(labels),
                    "matched": len(labels),
                    "unknown": 0,
                    "outside_horizon": 0,
                    "unknown_customer_ids": [],
                    "outside_horizon_customer_ids": [],
                }
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def labels_file(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("customerID,Churn\n7590-VHVEG,Yes\n5575-GNVDE,No\n", encoding="utf-8")
    return path


def feedback(labels_file: Path, url: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CHURNOPS_")}
    return subprocess.run(
        [str(CHURNOPS), "feedback", "--file", str(labels_file), "--url", url],
        cwd=REPO,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_feedback_sends_the_api_key_as_bearer_and_never_prints_it(labels_file):
    with authorizing_detector() as (url, seen):
        result = feedback(labels_file, url, CHURNOPS_DETECTOR_API_KEY=KEY)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["matched"] == 2
    assert seen[0]["authorization"] == f"Bearer {KEY}"
    assert KEY not in result.stdout + result.stderr


def test_feedback_refused_by_the_authorizer_exits_1_without_the_key(labels_file):
    with authorizing_detector() as (url, seen):
        result = feedback(labels_file, url, CHURNOPS_DETECTOR_API_KEY=KEY[:-1])
        anonymous = feedback(labels_file, url)
    assert result.returncode == 1
    assert "answered 401" in result.stderr
    assert "missing_api_key" in result.stderr
    assert KEY[:-1] not in result.stdout + result.stderr
    assert anonymous.returncode == 1
    assert "authorization" not in seen[-1]
