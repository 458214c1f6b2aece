"""`churnops serve`: the local stack starts on 127.0.0.1, answers, and stops cleanly on Ctrl-C."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support.services import REPO, free_port, http_ok, predictor_python, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]
CHURNOPS = str(Path(sys.executable).parent / "churnops")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_serve_starts_all_components_answers_and_stops_them_on_sigint(trained_model, customers, tmp_path):
    # A copy of the session's ChurnOps home: `serve` re-exports the champion into <home>/models, which
    # must not replace the artefact the other tests' predictor serves.
    home = tmp_path / "home"
    shutil.copytree(trained_model.settings.home, home, ignore=shutil.ignore_patterns("models"))
    port, predictor_port, detector_port = free_port(), free_port(), free_port()
    while predictor_port + 2 in (port, port + 1) or detector_port in range(
        predictor_port, predictor_port + 3
    ):
        predictor_port, detector_port = free_port(), free_port()
    output = tmp_path / "serve.log"
    env = {
        **os.environ,
        "CHURNOPS_MODEL_HOME": str(home),
        "CHURNOPS_STACK_PREDICTOR_PYTHON": str(predictor_python()),
    }
    with output.open("wb") as sink:
        serve = subprocess.Popen(
            [
                CHURNOPS,
                "serve",
                "--port",
                str(port),
                "--predictor-port",
                str(predictor_port),
                "--detector-port",
                str(detector_port),
            ],
            cwd=REPO,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(http_ok(f"http://127.0.0.1:{port}/v2/models/churn/ready"), 120, "churnops serve")
        wait_until(lambda: "Ctrl-C stops" in output.read_text(), 10, "the announcement")
        response = httpx.post(
            f"http://127.0.0.1:{port}/v1/models/churn:predict", json={"instances": [customers[0]]}
        )
        assert response.status_code == 200
        text = output.read_text()
        assert f"http://127.0.0.1:{port}/v1/models/churn:predict" in text
        assert f"http://127.0.0.1:{port}/v2/models/churn/infer" in text
        pids = [int(pid) for pid in re.findall(r"ready \(pid (\d+)\)", text)]
        assert len(pids) == 3  # detector, predictor, transformer
        # The transformer's payload logger reaches the detector, as KServe's agent would in the cluster.
        wait_until(
            lambda: (
                'churn_payload_joins_total{outcome="joined"} 1.0'
                in httpx.get(f"http://127.0.0.1:{detector_port}/metrics").text
            ),
            30,
            "the request/response pair at the detector",
        )
        assert all(_alive(pid) for pid in pids)
        serve.send_signal(signal.SIGINT)
        assert serve.wait(60) == 0
    finally:
        if serve.poll() is None:
            # Let the stack stop its components itself; SIGKILL would orphan them (own sessions).
            serve.send_signal(signal.SIGINT)
            try:
                serve.wait(60)
            except subprocess.TimeoutExpired:
                serve.kill()
                serve.wait()
        for pid in re.findall(r"ready \(pid (\d+)\)", output.read_text()):
            if _alive(int(pid)):
                os.kill(int(pid), signal.SIGKILL)
    assert not any(_alive(pid) for pid in pids)
    text = output.read_text()
    assert "predictor stopped" in text
    assert "transformer stopped" in text
    assert "detector stopped" in text
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/v2/health/live", timeout=2)


def test_serve_without_a_model_says_how_to_get_one(tmp_path):
    result = subprocess.run(
        [CHURNOPS, "serve"],
        cwd=REPO,
        env={**os.environ, "CHURNOPS_MODEL_HOME": str(tmp_path / "empty-home")},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    assert "--train-if-missing" in result.stderr


def test_serve_train_if_missing_without_data_says_where_it_looked(tmp_path):
    """`make run` on a machine without the CSV: one clear line naming the places tried, no traceback."""
    result = subprocess.run(
        [CHURNOPS, "serve", "--train-if-missing"],
        cwd=tmp_path,
        env={
            **os.environ,
            "CHURNOPS_MODEL_HOME": str(tmp_path / "empty-home"),
            "CHURNOPS_MODEL_DATA": str(tmp_path / "nowhere.csv"),
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    assert "churnops data download" in result.stderr
    assert "Traceback" not in result.stderr
    assert "╭" not in result.stderr  # rich's traceback frame
