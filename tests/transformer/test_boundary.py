"""The transformer's boundary (issue 10): what a hostile or broken request gets, exactly.

Every refusal is `churn_core.errors.error_body(code, message)`: JSON `{"error", "code"}`, a 4xx for
anything a client sends, never a stack trace, never the predictor's address.
"""

from __future__ import annotations

import json
import socket
import struct

import httpx
import pytest

from tests.support.services import wait_until
from tests.transformer.conftest import transformer_behind_proxy, v2_request

pytestmark = pytest.mark.integration

MAX_BODY = 4 * 1024 * 1024
INFER = "/v2/models/churn/infer"


def _refused(response: httpx.Response, status: int, code: str) -> dict[str, str]:
    assert response.status_code == status, response.text[:500]
    body = response.json()
    assert set(body) == {"error", "code"}
    assert body["code"] == code, body
    assert "Traceback" not in response.text
    return body


def _raw(port: int, head: bytes, chunks: list[bytes] = ()) -> bytes:  # type: ignore[assignment]
    """Send a request by hand (headers, then chunks as far as the server takes them); the answer's bytes."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.sendall(head)
        try:
            for chunk in chunks:
                sock.sendall(chunk)
        except OSError:
            pass  # the server stopped reading at its cap and answered
        answer = b""
        try:
            while b"\r\n\r\n" not in answer or len(answer) < answer.index(b"\r\n\r\n") + 4 + 20:
                data = sock.recv(65536)
                if not data:
                    break
                answer += data
        except OSError:
            pass
        return answer


def test_a_declared_body_over_the_cap_is_refused_before_it_is_read(transformer):
    head = (
        f"POST {INFER} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        f"Content-Length: {10 * 1024**3}\r\n\r\n"
    ).encode()
    answer = _raw(transformer.port, head)  # not one byte of the 10 GB sent
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b'"code":"payload_too_large"' in answer
    response = httpx.post(f"{transformer.url}{INFER}", content=b"[" * (MAX_BODY + 1))
    _refused(response, 413, "payload_too_large")


def test_a_chunked_body_over_the_cap_is_cut_off_while_reading(transformer):
    head = (
        f"POST {INFER} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode()
    piece = b" " * 65536
    chunks = [b"%x\r\n%s\r\n" % (len(piece), piece)] * (MAX_BODY // len(piece) + 8)
    answer = _raw(transformer.port, head, chunks)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b'"code":"payload_too_large"' in answer


@pytest.mark.parametrize("depth", [33, 1000, 100_000])
@pytest.mark.parametrize("path", [INFER, "/v1/models/churn:predict"])
def test_json_nested_too_deep_is_refused_before_parsing(client, path, depth):
    body = b'{"inputs": ' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"
    _refused(client.post(path, content=body), 400, "json_too_deep")


def test_json_at_the_depth_limit_is_parsed(client):
    body = b'{"inputs": ' + b"[" * 31 + b"]" * 31 + b"}"
    assert client.post(INFER, content=body).json()["code"] != "json_too_deep"


@pytest.mark.parametrize("path", [INFER, "/v1/models/churn:predict"])
def test_json_with_too_many_values_is_refused_before_parsing(client, path):
    # 150,001 empty arrays in 450 KB: ~8 MB once parsed; the same shape at the 4 MiB cap, ~80 MB.
    body = b'{"inputs": [' + b"[]," * 150_000 + b"[]]}"
    assert len(body) < MAX_BODY
    error = _refused(client.post(path, content=body), 413, "json_too_many_values")
    assert "at most 100000" in error["error"]


def test_separators_inside_strings_are_not_counted_as_values(client):
    # The quick bound counts every comma; the scan that follows it knows this is one string.
    body = (
        b'{"inputs": [{"name": "' + b"," * 200_000 + b'", "datatype": "BYTES", "shape": [1], "data": ["x"]}]}'
    )
    assert client.post(INFER, content=body).json()["code"] != "json_too_many_values"


def test_not_json_and_truncated_json_are_malformed_json(client, customers):
    whole = json.dumps(v2_request(customers[:2])).encode()
    for body in (b"not json", whole[: len(whole) // 2], b"", b"\xff\xfe"):
        _refused(client.post(INFER, content=body), 400, "malformed_json")


def _binary(header: bytes, tail: bytes = b"", length: str | None = None) -> tuple[bytes, dict[str, str]]:
    return header + tail, {
        "inference-header-content-length": length if length is not None else str(len(header)),
        "content-type": "application/octet-stream",
    }


def test_broken_binary_v2_requests_are_malformed_requests(client):
    tensor = {"name": "tenure", "datatype": "INT64", "shape": [1], "parameters": {"binary_data_size": 8}}
    good_header = json.dumps({"inputs": [tensor]}).encode()
    cases = {
        "header not JSON": _binary(b"{not json", b"\0" * 8),
        "shape not a list of ints": _binary(
            json.dumps({"inputs": [{**tensor, "shape": ["x"]}]}).encode(), b"\0" * 8
        ),
        "negative shape": _binary(json.dumps({"inputs": [{**tensor, "shape": [-1]}]}).encode(), b"\0" * 8),
        "header length beyond the body": _binary(good_header, b"", str(len(good_header) + 100)),
        "negative header length": _binary(good_header, b"\0" * 8, "-5"),
        "header length not a number": _binary(good_header, b"\0" * 8, "ten"),
        "binary data beyond the body": _binary(good_header, b"\0" * 3),
        "negative binary size": _binary(
            json.dumps({"inputs": [{**tensor, "parameters": {"binary_data_size": -8}}]}).encode(), b""
        ),
        "huge shape": _binary(json.dumps({"inputs": [{**tensor, "shape": [10**12]}]}).encode(), b"\0" * 8),
    }
    for name, (body, headers) in cases.items():
        response = client.post(INFER, content=body, headers=headers)
        assert response.status_code == 400, (name, response.text)
        assert response.json()["code"] == "malformed_request", (name, response.text)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v2/repository/models/churn/unload"),
        ("POST", "/v2/repository/models/churn/load"),
        ("POST", "/v2/repository/index"),
        ("GET", "/v2/repository/index"),
        ("GET", "/docs"),
        ("GET", "/openapi.json"),
        ("POST", "/no/such/path"),
        ("POST", "/not/a/route/infer"),
        ("POST", "/v2/models/churn/infer/"),
        ("GET", "/v2/health/live/"),
    ],
)
def test_no_model_repository_and_unknown_paths_are_not_found(client, method, path):
    _refused(client.request(method, path, content=b"{}"), 404, "not_found")


def test_a_known_path_with_the_wrong_method_is_405(client):
    _refused(client.get(INFER), 405, "method_not_allowed")
    _refused(client.delete("/v2/health/ready"), 405, "method_not_allowed")


def test_an_unknown_model_is_unknown_model(client, customers):
    body = _refused(
        client.post("/v2/models/wine/infer", json=v2_request(customers[:1])), 404, "unknown_model"
    )
    assert "wine" in body["error"]
    huge = "m" * 8000
    response = client.post(f"/v2/models/{huge}/infer", json=v2_request(customers[:1]))
    assert len(response.content) < 4096
    _refused(response, 404, "unknown_model")


def test_a_huge_input_name_gives_a_bounded_answer_and_log_line(client, customers, transformer):
    name = "x" * (MAX_BODY - 4096)
    request = v2_request(customers[:1])
    request["inputs"].append({"name": name, "datatype": "BYTES", "shape": [1], "data": ["a"]})
    response = client.post(INFER, json=request, headers={"x-request-id": "huge-name"})
    assert len(response.content) < 4096
    _refused(response, 400, "extra_field")
    wait_until(
        lambda: any(line.get("request_id") == "huge-name" for line in transformer.log_lines()), 10, "log line"
    )
    text = transformer.log_file.read_text(encoding="utf-8")
    (line,) = [raw for raw in text.splitlines() if '"huge-name"' in raw]
    assert len(line) < 8192


def test_predictor_down_is_503_without_its_address_and_invalid_input_still_400(
    artefact_dir, predictor, customers, tmp_path
):
    with (
        transformer_behind_proxy(
            artefact_dir,
            predictor,
            tmp_path / "transformer.log",
            env={"CHURNOPS_TRANSFORMER_PREDICTOR_TIMEOUT_S": "2", "CHURNOPS_TRANSFORMER_HEALTH_CACHE_S": "0"},
        ) as (served, proxy),
        httpx.Client(base_url=served.url, timeout=30) as http,
    ):
        assert http.post(INFER, json=v2_request(customers[:1])).status_code == 200
        proxy.cut()
        for _ in range(3):
            response = http.post(INFER, json=v2_request(customers[:1]))
            body = _refused(response, 503, "predictor_unavailable")
            assert "127.0.0.1" not in body["error"]
            assert str(proxy.port) not in body["error"]
        invalid = v2_request(customers[:1])
        invalid["inputs"][0]["data"] = []
        _refused(http.post(INFER, json=invalid), 400, "shape_mismatch")
        _refused(http.post(INFER, content=b"{"), 400, "malformed_json")


def test_a_well_formed_binary_v2_request_is_answered(client, customers):
    request = v2_request(customers[:2])
    raw = b""
    for tensor in request["inputs"]:
        if tensor["name"] == "tenure":
            raw = struct.pack("<2q", *tensor.pop("data"))
            tensor["parameters"] = {"binary_data_size": len(raw)}
    header = json.dumps(request).encode()
    body, headers = _binary(header, raw)
    response = client.post(INFER, content=body, headers=headers)
    assert response.status_code == 200, response.text
    expected = client.post(INFER, json=v2_request(customers[:2])).json()
    assert response.json()["outputs"] == expected["outputs"]
