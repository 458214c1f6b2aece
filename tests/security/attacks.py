"""The attack suite's cases: hostile or malformed requests to the three services and the answer each must get.

Where each goes (`via`), as in the cluster:
- "gateway": the mesh's front door (scripts/load/gateway.py: DECODE_AND_MERGE_SLASHES path normalization,
  every path but the exact health paths checked by the real authorizer, then the transformer or the
  detector). Everything a client with or without a key can send goes here.
- "transformer": straight to the transformer, with what got through the mesh: bodies (Envoy streams them,
  chunked stays chunked, and caps nothing by default) and paths a pod inside the cluster could call.
- "detector": straight to the detector, as a churn pod (the only identity the mesh lets post `/events`),
  or a compromised one, does.
"""

from __future__ import annotations

import base64
import http.client
import json
import random
import select
import socket
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

from scripts.load.payloads import customer, v1_body, v2_body

KIB = 1024
MIB = 1024 * KIB
TRANSFORMER_MAX_BODY = 4 * MIB  # CHURNOPS_TRANSFORMER_MAX_BODY_BYTES' default
DETECTOR_MAX_EVENT = 8 * MIB  # CHURNOPS_DETECTOR_MAX_EVENT_BYTES' default
DETECTOR_MAX_FEEDBACK = 2 * MIB  # CHURNOPS_DETECTOR_MAX_FEEDBACK_BYTES' default
MAX_ANSWER = 4 * KIB  # no answer echoes what the client sent beyond this
SEND_CHUNK = 64 * KIB
INFER = "/v2/models/churn/infer"
PREDICT = "/v1/models/churn:predict"
REQUEST_TYPE = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE = "org.kubeflow.serving.inference.response"
INJECTION = "<!channel> <https://evil.example/login|verify your account> &amp; *urgent*"


# --- a client that sends exactly what it is told -------------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: dict[str, str]  # names lowercased
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def code(self) -> str | None:
        """The `code` of the one error body, None for a body that is not one."""
        try:
            document = self.json()
        except ValueError:
            return None
        return document.get("code") if isinstance(document, dict) else None


def send(
    base: str,
    method: str,
    target: str,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    *,
    chunked: bool = False,
    timeout: float = 30.0,
) -> Answer:
    """One request over its own connection, the request target sent byte for byte (no client-side path
    normalization: `//`, `/./`, `%2F` reach the server as written) and header values as latin-1 (control
    characters included). The body goes in 64 KiB pieces, and sending stops as soon as the server answers:
    a server that refuses an oversized body early, and closes, must be heard, not reset."""
    url = urlsplit(base)
    sock = socket.create_connection((url.hostname or "127.0.0.1", url.port or 80), timeout=timeout)
    try:
        head = [f"{method} {target} HTTP/1.1", f"host: {url.netloc}", "connection: close"]
        head += [f"{name}: {value}" for name, value in (headers or {}).items()]
        if body is not None:
            head.append("transfer-encoding: chunked" if chunked else f"content-length: {len(body)}")
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        if body is not None:
            _send_body(sock, body, chunked)
        response = http.client.HTTPResponse(sock, method=method)
        response.begin()
        content = response.read()
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, content)
    finally:
        sock.close()


def _send_body(sock: socket.socket, body: bytes, chunked: bool) -> None:
    try:
        for start in range(0, len(body), SEND_CHUNK):
            if select.select([sock], [], [], 0)[0]:
                return  # the server answered (or closed) before reading everything: hear it
            piece = body[start : start + SEND_CHUNK]
            sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
        if chunked:
            sock.sendall(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        return  # the answer, if any, is read next


# --- bodies --------------------------------------------------------------------------------------------


def customers(count: int = 1, seed: int = 10) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [customer(rng, index) for index in range(count)]


def v1_with(**fields: Any) -> bytes:
    """One valid v1 customer with `fields` replaced (a value of `...` removes the field)."""
    one = {**customers()[0], **fields}
    return v1_body([{k: v for k, v in one.items() if v is not ...}])


def v1_raw(field_name: str, literal: str) -> bytes:
    """A v1 body whose `field_name` holds `literal` as written (NaN, Infinity: not JSON, Python's extension)."""
    one = customers()[0]
    one[field_name] = "@@"
    return v1_body([one]).replace(b'"@@"', literal.encode())


def nested(depth: int) -> bytes:
    """A v1 body whose first customer's `tenure` is a list nested `depth` deep."""
    return v1_raw("tenure", "[" * depth + "1" + "]" * depth)


def binary_v2(header: bytes, declared: int | None = None, tail: bytes = b"") -> tuple[bytes, dict[str, str]]:
    """KServe's binary tensor extension: a JSON header of `declared` bytes (its real length unless told),
    then raw tensor bytes."""
    length = len(header) if declared is None else declared
    return header + tail, {
        "inference-header-content-length": str(length),
        "content-type": "application/octet-stream",
    }


def binary_header(shape: object) -> bytes:
    return json.dumps(
        {
            "inputs": [
                {"name": "tenure", "datatype": "INT64", "shape": shape, "parameters": {"binary_data_size": 8}}
            ]
        }
    ).encode()


def oversized_v1(total: int) -> bytes:
    """A syntactically valid v1 body of `total` bytes (one customer padded with blanks)."""
    body = v1_with()
    return body[:-1] + b" " * (total - len(body)) + body[-1:]


def event_headers(
    event_type: str = REQUEST_TYPE, *, event_id: str | None = None, **overrides: str | None
) -> dict[str, str]:
    headers: dict[str, str | None] = {
        "ce-specversion": "1.0",
        "ce-id": event_id or f"attack-{uuid.uuid4()}",
        "ce-type": event_type,
        "ce-source": "http://localhost:9081/",
        "ce-inferenceservicename": "churn",
        "ce-component": "predictor",
        "content-type": "application/json",
    }
    headers.update(overrides)
    return {k: v for k, v in headers.items() if v is not None}


def empty_arrays(total: int) -> bytes:
    return b"[" + b"[]," * ((total - 8) // 3) + b"[]]"


def label(**fields: Any) -> bytes:
    one = {"customer_id": "LOAD-00001", "churned": True, "observed_at": "2026-11-29T12:00:00+00:00"}
    one.update(fields)
    return json.dumps({"labels": [one]}).encode()


# --- cases ---------------------------------------------------------------------------------------------


Body = bytes | Callable[[], bytes] | None
Check = Callable[[Answer, Any], None]


@dataclass(frozen=True)
class Attack:
    id: str
    service: str  # "authorizer", "transformer" or "detector": whose boundary the case proves
    via: str  # "gateway", "transformer" or "detector" (module docstring)
    method: str
    path: str
    status: int
    code: str | None  # the error body's `code`; None: an answer that is not an error body
    key: str | None = None  # a key name of the suite's keys file ("predict", "feedback", ...)
    key_as: str = "bearer"  # how the key is presented: "bearer", "x-api-key", or a header of our own
    headers: dict[str, str] = field(default_factory=dict)
    body: Body = None
    chunked: bool = False
    repeat: int = 1  # sent this many times; all but the last must be 200 (rate limits)
    check: Check | None = None  # further assertions on the (last) answer and the suite's context
    before: Callable[[Any], None] | None = None  # a request of the suite's context to send first

    def content(self) -> bytes | None:
        return self.body() if callable(self.body) else self.body


def _small(answer: Answer, _: Any) -> None:
    assert len(answer.body) < MAX_ANSWER, f"answer of {len(answer.body)} bytes echoes the request"


def _names(text: str) -> Check:
    def check(answer: Answer, context: Any) -> None:
        _small(answer, context)
        assert text in answer.json()["error"], answer.body

    return check


def _request_id_not_echoed(sent: str) -> Check:
    def check(answer: Answer, _: Any) -> None:
        echoed = answer.headers.get("x-request-id", "")
        assert echoed, "every inference answer carries a request id"
        assert echoed != sent
        assert len(echoed) <= 128
        assert echoed.isprintable()

    return check


def _retry_after(answer: Answer, _: Any) -> None:
    assert int(answer.headers["retry-after"]) >= 1, answer.headers
    assert answer.headers["x-ratelimit-remaining"] == "0"


def _www_authenticate(answer: Answer, _: Any) -> None:
    assert answer.headers["www-authenticate"].startswith("Bearer")


def _injected_version_gets_no_label(answer: Answer, context: Any) -> None:
    """The forged version is stored as data, but the metrics label stays the closed set (`unknown`)."""
    assert answer.json() == {"status": "joined", "rows": 1}, answer.body
    metrics = send(context.stack.detector_direct_url, "GET", "/metrics").body.decode()
    assert "evil.example" not in metrics
    assert "<!channel>" not in metrics
    assert 'model_version="unknown"' in metrics


def labels(count: int, id_chars: int) -> bytes:
    """`count` labels of distinct unknown customers, ids of `id_chars` characters."""
    stamp = "2026-11-29T12:00:00+00:00"
    items = [
        {"customer_id": f"{i:08d}".ljust(id_chars, "u"), "churned": False, "observed_at": stamp}
        for i in range(count)
    ]
    return json.dumps({"labels": items}).encode()


def _reported_ids_bounded(answer: Answer, _: Any) -> None:
    """The answer names unknown customers, but at most 1,000 of them: it cannot grow with the body."""
    document = answer.json()
    assert document["received"] == 5000, document.get("received")
    assert len(document["unknown_customer_ids"]) == 1000
    assert len(answer.body) < 300 * KIB


def _feedback_stored(answer: Answer, _: Any) -> None:
    document = answer.json()
    assert document["received"] == 1, document
    assert len(answer.body) < MAX_ANSWER


FORGED_ID = "attack-forged-version"


def forged_response(version: str) -> bytes:
    """The response event of a call whose `model_version` is attacker text."""
    return json.dumps(
        {"predictions": [{"churn_probability": 0.5, "churn_prediction": False, "model_version": version}]}
    ).encode()


def _forged_request(context: Any) -> None:
    """The request half of the forged call (same ce-id), so that the response joins."""
    answer = send(
        context.stack.detector_direct_url, "POST", "/events", event_headers(event_id=FORGED_ID), v1_with()
    )
    assert answer.status == 200, answer.body


def _authorizer_cases() -> Iterator[Attack]:
    good = v2_body(customers())
    yield from (
        Attack("no-key", "authorizer", "gateway", "POST", INFER, 401, "unauthenticated", body=good,
               check=_www_authenticate),
        Attack("unknown-well-formed-key", "authorizer", "gateway", "POST", INFER, 401, "invalid_api_key",
               key="forged", body=good),
        Attack("garbage-bearer", "authorizer", "gateway", "POST", INFER, 401, "invalid_api_key",
               key="garbage", body=good),
        Attack("revoked-key", "authorizer", "gateway", "POST", INFER, 401, "invalid_api_key", key="revoked",
               body=good),
        Attack("key-in-query-string", "authorizer", "gateway", "POST", INFER + "?api_key={key}", 401,
               "unauthenticated", key="predict", key_as="query", body=good),
        Attack("key-in-wrong-header", "authorizer", "gateway", "POST", INFER, 401, "unauthenticated",
               key="predict", key_as="x-api-token", body=good),
        Attack("key-as-basic-auth", "authorizer", "gateway", "POST", INFER, 401, "unauthenticated",
               key="predict", key_as="basic", body=good),
        Attack("key-in-cookie", "authorizer", "gateway", "POST", INFER, 401, "unauthenticated",
               key="predict", key_as="cookie", body=good),
        Attack("spoofed-key-id-header", "authorizer", "gateway", "POST", INFER, 401, "unauthenticated",
               headers={"x-churnops-key-id": "admin"}, body=good),
        Attack("feedback-key-on-infer", "authorizer", "gateway", "POST", INFER, 403, "forbidden",
               key="feedback", body=good),
        Attack("metrics-key-on-infer", "authorizer", "gateway", "POST", PREDICT, 403, "forbidden",
               key="metrics", body=v1_with()),
        Attack("predict-key-on-metrics", "authorizer", "gateway", "GET", "/metrics", 403, "forbidden",
               key="predict"),
        Attack("predict-key-on-feedback", "authorizer", "gateway", "POST", "/feedback", 403, "forbidden",
               key="predict", body=label()),
        Attack("predict-key-on-reports", "authorizer", "gateway", "GET", "/reports/drift", 403, "forbidden",
               key="predict"),
        Attack("feedback-key-on-performance", "authorizer", "gateway", "GET", "/performance", 403,
               "forbidden", key="feedback"),
        Attack("predict-key-unloads-model", "authorizer", "gateway", "POST",
               "/v2/repository/models/churn/unload", 403, "forbidden", key="predict", body=b"{}"),
        Attack("metrics-without-key", "authorizer", "gateway", "GET", "/metrics", 401, "unauthenticated"),
        Attack("server-metadata-without-key", "authorizer", "gateway", "GET", "/v2", 401, "unauthenticated"),
        Attack("encoded-slashes", "authorizer", "gateway", "POST", "/v2%2Fmodels%2Fchurn%2Finfer", 401,
               "unauthenticated", body=good),
        Attack("encoded-slashes-lowercase", "authorizer", "gateway", "POST", "/v2%2fmodels%2fchurn%2finfer",
               401, "unauthenticated", body=good),
        Attack("double-slashes", "authorizer", "gateway", "POST", "//v2//models//churn/infer", 401,
               "unauthenticated", body=good),
        Attack("dot-segment", "authorizer", "gateway", "POST", "/v2/./models/churn/./infer", 401,
               "unauthenticated", body=good),
        Attack("dot-dot-out-of-health-path", "authorizer", "gateway", "POST",
               "/v2/health/live/../../models/churn/infer", 401, "unauthenticated", body=good),
        Attack("encoded-dot-dot-out-of-health-path", "authorizer", "gateway", "POST",
               "/v2/health/ready/%2E%2E%2F%2E%2E/models/churn/infer", 401, "unauthenticated", body=good),
        Attack("backslash-path", "authorizer", "gateway", "POST", "/v2\\models\\churn\\infer", 401,
               "unauthenticated", body=good),
        Attack("upper-case-path", "authorizer", "gateway", "POST", "/V2/MODELS/churn/INFER", 403,
               "unknown_path", key="predict", body=good),
        Attack("trailing-slash-without-key", "authorizer", "gateway", "POST", INFER + "/", 401,
               "unauthenticated", body=good),
        Attack("matrix-parameter", "authorizer", "gateway", "POST", INFER + ";x=1", 403, "unknown_path",
               key="predict", body=good),
        Attack("nul-in-path", "authorizer", "gateway", "POST", INFER + "%00", 400, None, key="predict",
               body=good),
        Attack("double-encoded-slash", "authorizer", "gateway", "POST", "/v2%252Fmodels%252Fchurn%252Finfer",
               403, "unknown_path", key="predict", body=good),
        Attack("grpc-path", "authorizer", "gateway", "POST", "/inference.GRPCInferenceService/ModelInfer",
               403, "unknown_path", key="predict", body=b"\x00\x00\x00\x00\x00"),
        Attack("explain-without-explainer", "authorizer", "gateway", "POST", "/v1/models/churn:explain", 403,
               "unknown_path", key="predict", body=v1_with()),
        Attack("openapi-docs", "authorizer", "gateway", "GET", "/docs", 403, "unknown_path", key="admin"),
        Attack("events-through-ingress", "authorizer", "gateway", "POST", "/events", 403, "unknown_path",
               key="admin", headers=event_headers(), body=v1_with()),
        Attack("report-path-traversal", "authorizer", "gateway", "GET", "/reports/drift/..%2F..%2Fetc%2Fpasswd",
               403, "unknown_path", key="admin"),
        Attack("trace-method", "authorizer", "gateway", "TRACE", INFER, 403, "unknown_path", key="predict"),
        Attack("propfind-method", "authorizer", "gateway", "PROPFIND", "/", 403, "unknown_path",
               key="admin"),
        Attack("get-on-infer", "authorizer", "gateway", "GET", INFER, 403, "unknown_path", key="predict"),
        Attack("put-on-feedback", "authorizer", "gateway", "PUT", "/feedback", 403, "unknown_path",
               key="feedback", body=label()),
        Attack("delete-report", "authorizer", "gateway", "DELETE", "/reports/drift/1", 403, "unknown_path",
               key="admin"),
        Attack("options-preflight-without-key", "authorizer", "gateway", "OPTIONS", INFER, 403,
               "unknown_path"),
        Attack("rate-limit-exceeded", "authorizer", "gateway", "POST", INFER, 429, "rate_limited",
               key="limited", body=good, repeat=3, check=_retry_after),
    )  # fmt: skip


def _transformer_cases() -> Iterator[Attack]:
    good = v2_body(customers())
    big_name = "n" * (3 * MIB)  # the largest that fits the 4 MiB body cap: a 10 MB one is a 413
    yield from (
        Attack("body-over-cap-declared", "transformer", "transformer", "POST", INFER, 413,
               "payload_too_large", body=lambda: oversized_v1(TRANSFORMER_MAX_BODY + MIB)),
        Attack("body-over-cap-chunked", "transformer", "transformer", "POST", PREDICT, 413,
               "payload_too_large", body=lambda: oversized_v1(TRANSFORMER_MAX_BODY + MIB), chunked=True),
        Attack("json-too-deep", "transformer", "gateway", "POST", PREDICT, 400, "json_too_deep",
               key="predict", body=nested(64)),
        Attack("json-very-deep", "transformer", "gateway", "POST", PREDICT, 400, "json_too_deep",
               key="predict", body=nested(100_000)),
        Attack("json-too-many-values", "transformer", "gateway", "POST", INFER, 413, "json_too_many_values",
               key="predict", body=lambda: empty_arrays(3 * MIB)),
        Attack("not-json", "transformer", "gateway", "POST", PREDICT, 400, "malformed_json", key="predict",
               body=b"instances=1&tenure=2"),
        Attack("truncated-json", "transformer", "gateway", "POST", INFER, 400, "malformed_json",
               key="predict", body=good[: len(good) // 2]),
        Attack("binary-v2-header-not-json", "transformer", "gateway", "POST", INFER, 400,
               "malformed_request", key="predict", body=binary_v2(b"{not json")[0],
               headers=binary_v2(b"{not json")[1]),
        Attack("binary-v2-shape-not-list", "transformer", "gateway", "POST", INFER, 400, "malformed_request",
               key="predict", body=binary_v2(binary_header("1"), tail=b"\x00" * 8)[0],
               headers=binary_v2(binary_header("1"))[1]),
        Attack("binary-v2-shape-of-strings", "transformer", "gateway", "POST", INFER, 400,
               "malformed_request", key="predict", body=binary_v2(binary_header(["a"]), tail=b"\x00" * 8)[0],
               headers=binary_v2(binary_header(["a"]))[1]),
        Attack("binary-v2-length-past-body", "transformer", "gateway", "POST", INFER, 400,
               "malformed_request", key="predict", body=binary_v2(binary_header([1]), 10_000)[0],
               headers=binary_v2(binary_header([1]), 10_000)[1]),
        Attack("binary-v2-negative-length", "transformer", "gateway", "POST", INFER, 400,
               "malformed_request", key="predict", body=binary_v2(binary_header([1]), -5)[0],
               headers=binary_v2(binary_header([1]), -5)[1]),
        Attack("unknown-path-in-pod", "transformer", "transformer", "GET", "/v3/admin", 404, "not_found"),
        Attack("wrong-method-in-pod", "transformer", "transformer", "GET", INFER, 405, "method_not_allowed"),
        Attack("unknown-model-v2", "transformer", "gateway", "POST", "/v2/models/other/infer", 404,
               "unknown_model", key="predict", body=good),
        Attack("unknown-model-v1", "transformer", "gateway", "POST", "/v1/models/other:predict", 404,
               "unknown_model", key="predict", body=v1_with()),
        Attack("huge-input-name-v2", "transformer", "gateway", "POST", INFER, 400, "extra_field",
               key="predict", body=lambda: v2_body([{**customers()[0], big_name: 1}]), check=_small),
        Attack("huge-field-name-v1", "transformer", "gateway", "POST", PREDICT, 400, "extra_field",
               key="predict", body=lambda: v1_with(**{big_name: 1}), check=_small),
        Attack("nan", "transformer", "gateway", "POST", PREDICT, 400, "not_finite", key="predict",
               body=v1_raw("MonthlyCharges", "NaN"), check=_names("MonthlyCharges")),
        Attack("infinity", "transformer", "gateway", "POST", PREDICT, 400, "not_finite", key="predict",
               body=v1_raw("TotalCharges", "-Infinity"), check=_names("TotalCharges")),
        Attack("missing-field", "transformer", "gateway", "POST", PREDICT, 400, "missing_field",
               key="predict", body=v1_with(Contract=...), check=_names("Contract")),
        Attack("wrong-type", "transformer", "gateway", "POST", PREDICT, 400, "wrong_type", key="predict",
               body=v1_with(SeniorCitizen="often"), check=_names("SeniorCitizen")),
        Attack("unknown-category", "transformer", "gateway", "POST", PREDICT, 400, "unknown_value",
               key="predict", body=v1_with(Contract="<script>alert(1)</script>"), check=_small),
        Attack("out-of-range", "transformer", "gateway", "POST", PREDICT, 400, "out_of_range",
               key="predict", body=v1_with(tenure=-3), check=_names("tenure")),
        Attack("empty-batch", "transformer", "gateway", "POST", PREDICT, 400, "empty_batch", key="predict",
               body=v1_body([])),
        Attack("batch-too-large", "transformer", "gateway", "POST", PREDICT, 400, "batch_too_large",
               key="predict", body=lambda: v1_body(customers(1001))),
        Attack("huge-request-id", "transformer", "gateway", "POST", INFER, 200, None, key="predict",
               headers={"x-request-id": "r" * 8000}, body=good, check=_request_id_not_echoed("r" * 8000)),
        Attack("non-printable-request-id", "transformer", "gateway", "POST", INFER, 200, None,
               key="predict", headers={"x-request-id": "id\x85\xa0\xff"}, body=good,
               check=_request_id_not_echoed("id\x85\xa0\xff")),
        # Control characters in a header: the front door refuses the request (Envoy, like uvicorn, 400).
        Attack("control-chars-in-request-id", "transformer", "gateway", "POST", INFER, 400, None,
               key="predict", headers={"x-request-id": "id\x01\x1b[31m\x7f"}, body=good),
    )  # fmt: skip


def _detector_cases() -> Iterator[Attack]:
    request = v1_with()
    yield from (
        Attack("event-without-ce-headers", "detector", "detector", "POST", "/events", 400,
               "not_a_cloudevent", headers={"content-type": "application/json"}, body=request),
        Attack("event-wrong-specversion", "detector", "detector", "POST", "/events", 400,
               "invalid_cloudevent", headers=event_headers(**{"ce-specversion": "0.3"}), body=request),
        Attack("event-unknown-type", "detector", "detector", "POST", "/events", 400, "invalid_cloudevent",
               headers=event_headers(INJECTION), body=request, check=_small),
        Attack("event-without-id", "detector", "detector", "POST", "/events", 400, "invalid_cloudevent",
               headers=event_headers(**{"ce-id": None}), body=request),
        Attack("event-huge-id", "detector", "detector", "POST", "/events", 400, "invalid_cloudevent",
               headers=event_headers(event_id="i" * 4000), body=request, check=_small),
        Attack("event-bad-time", "detector", "detector", "POST", "/events", 400, "invalid_cloudevent",
               headers=event_headers(**{"ce-time": "yesterday"}), body=request),
        Attack("event-wrong-content-type", "detector", "detector", "POST", "/events", 415,
               "unsupported_media_type", headers=event_headers(**{"content-type": "application/octet-stream"}),
               body=request),
        Attack("event-structured-not-json", "detector", "detector", "POST", "/events", 400,
               "invalid_cloudevent", headers={"content-type": "application/cloudevents+json"}, body=b"{oops"),
        Attack("event-structured-bad-base64", "detector", "detector", "POST", "/events", 400,
               "invalid_cloudevent", headers={"content-type": "application/cloudevents+json"},
               body=json.dumps({"specversion": "1.0", "id": "x", "type": REQUEST_TYPE, "source": "s",
                                "data_base64": "%%%"}).encode()),
        Attack("event-payload-not-json", "detector", "detector", "POST", "/events", 400, "invalid_payload",
               headers=event_headers(), body=b"\x89PNG\r\n\x1a\n"),
        Attack("event-nan", "detector", "detector", "POST", "/events", 400, "invalid_payload",
               headers=event_headers(), body=v1_raw("tenure", "NaN")),
        Attack("event-probability-out-of-range", "detector", "detector", "POST", "/events", 400,
               "invalid_payload", headers=event_headers(RESPONSE_TYPE),
               body=json.dumps({"predictions": [{"churn_probability": 7, "churn_prediction": True}]}).encode()),
        Attack("event-over-cap-declared", "detector", "detector", "POST", "/events", 413, "payload_too_large",
               headers=event_headers(), body=lambda: b" " * (DETECTOR_MAX_EVENT + 1)),
        Attack("event-over-cap-chunked", "detector", "detector", "POST", "/events", 413, "payload_too_large",
               headers=event_headers(), body=lambda: b" " * (DETECTOR_MAX_EVENT + MIB), chunked=True),
        Attack("event-too-deep", "detector", "detector", "POST", "/events", 400, "json_too_deep",
               headers=event_headers(), body=nested(10_000)),
        Attack("event-too-many-values", "detector", "detector", "POST", "/events", 413,
               "json_too_many_values", headers=event_headers(), body=lambda: empty_arrays(2 * MIB)),
        Attack("event-get", "detector", "detector", "GET", "/events", 405, "method_not_allowed"),
        Attack("forged-model-version-label", "detector", "detector", "POST", "/events", 200, None,
               headers=event_headers(RESPONSE_TYPE, event_id=FORGED_ID), before=_forged_request,
               body=forged_response(INJECTION), check=_injected_version_gets_no_label),
        Attack("unknown-path-in-detector", "detector", "detector", "GET", "/admin", 404, "not_found"),
        Attack("feedback-without-key", "detector", "gateway", "POST", "/feedback", 401, "unauthenticated",
               body=label()),
        Attack("feedback-malformed-label", "detector", "gateway", "POST", "/feedback", 422, "invalid_labels",
               key="feedback", body=label(churned="perhaps")),
        Attack("feedback-control-characters", "detector", "gateway", "POST", "/feedback", 422,
               "invalid_labels", key="feedback", body=label(customer_id="C-1\x00\x1b[2J")),
        Attack("feedback-not-json", "detector", "gateway", "POST", "/feedback", 400, "invalid_json",
               key="feedback", body=b"customer_id=1"),
        Attack("feedback-too-deep", "detector", "gateway", "POST", "/feedback", 400, "json_too_deep",
               key="feedback", body=b'{"labels": ' + b"[" * 5000 + b"]" * 5000 + b"}"),
        Attack("feedback-huge-field-name", "detector", "gateway", "POST", "/feedback", 422, "invalid_labels",
               key="feedback", body=lambda: label(**{"x" * MIB: 1}), check=_small),
        Attack("feedback-slack-injection", "detector", "gateway", "POST", "/feedback", 200, None,
               key="feedback", body=label(customer_id=INJECTION), check=_feedback_stored),
        Attack("feedback-too-many-labels", "detector", "gateway", "POST", "/feedback", 422, "invalid_labels",
               key="feedback", body=lambda: labels(10_001, 8)),
        Attack("feedback-unknown-ids-echo-bounded", "detector", "gateway", "POST", "/feedback", 200, None,
               key="feedback", body=lambda: labels(5000, 255), check=_reported_ids_bounded),
        Attack("feedback-over-cap-declared", "detector", "detector", "POST", "/feedback", 413,
               "payload_too_large", body=lambda: b" " * (DETECTOR_MAX_FEEDBACK + 1)),
        Attack("feedback-over-cap-chunked", "detector", "detector", "POST", "/feedback", 413,
               "payload_too_large", body=lambda: b" " * (DETECTOR_MAX_FEEDBACK + MIB), chunked=True),
        Attack("report-superscript-id", "detector", "gateway", "GET", "/reports/drift/%C2%B2", 404,
               "report_not_found", key="admin"),
        Attack("report-huge-id", "detector", "gateway", "GET", "/reports/drift/" + "9" * 5000, 404,
               "report_not_found", key="admin", check=_small),
        Attack("report-injection-id", "detector", "gateway", "GET", "/reports/drift/%3Cscript%3E", 404,
               "report_not_found", key="admin", check=_small),
    )  # fmt: skip


def _repository_cases() -> Iterator[Attack]:
    """KServe's model-repository routes, last: today's transformer still serves them, so the unload takes
    the model out of service (issue 10, point 3) and would fail every later case; the load puts it back."""
    yield from (
        Attack("repository-unload", "transformer", "gateway", "POST", "/v2/repository/models/churn/unload",
               404, "not_found", key="admin", body=b"{}"),
        Attack("repository-load", "transformer", "gateway", "POST", "/v2/repository/models/churn/load", 404,
               "not_found", key="admin", body=b"{}"),
        Attack("repository-index", "transformer", "gateway", "POST", "/v2/repository/index", 404,
               "not_found", key="admin", body=b"{}"),
    )  # fmt: skip


def _as_json(cases: Iterator[Attack]) -> Iterator[Attack]:
    """Bodies declared JSON unless the case says otherwise: a refusal must be for the body, not its type."""
    for case in cases:
        declared = case.body is None or "content-type" in case.headers
        yield (
            case if declared else replace(case, headers={**case.headers, "content-type": "application/json"})
        )


CASES: tuple[Attack, ...] = (
    *_authorizer_cases(),
    *_as_json(_transformer_cases()),
    *_detector_cases(),
    *_repository_cases(),
)


def presented(attack: Attack, key: str | None) -> tuple[str, dict[str, str]]:
    """The request target and headers with the key presented as the case says."""
    headers = dict(attack.headers)
    target = attack.path
    if key is None:
        return target, headers
    if attack.key_as == "bearer":
        headers["authorization"] = f"Bearer {key}"
    elif attack.key_as == "query":
        target = target.replace("{key}", key)
    elif attack.key_as == "basic":
        headers["authorization"] = "Basic " + base64.b64encode(f"{key}:".encode()).decode()
    elif attack.key_as == "cookie":
        headers["cookie"] = f"api_key={key}"
    else:
        headers[attack.key_as] = key
    return target, headers
