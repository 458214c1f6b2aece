"""Parsing KServe payload-log events: the envelope exactly as the agent sends it, and both protocols'
payloads exactly as the transformer writes them."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import pytest
from starlette.datastructures import Headers

from churn_core.contract import telco_contract
from churn_monitoring.events import EventError, parse_event, parse_request, parse_response
from churn_monitoring.halves import Compactor, event_key
from churn_monitoring.join import PendingJoin
from churn_monitoring.recent import RecentKeys
from churn_monitoring.windows import WindowBuffer
from tests.monitoring.detector_support import (
    REQUEST_TYPE,
    RESPONSE_TYPE,
    kserve_headers,
    v1_request,
    v1_response,
    v2_request,
    v2_response,
)

CUSTOMER = {
    "customerID": "7590-VHVEG",
    "gender": "Female",
    "SeniorCitizen": 0,
    "Partner": "Yes",
    "Dependents": "No",
    "tenure": 1,
    "PhoneService": "No",
    "MultipleLines": "No phone service",
    "InternetService": "DSL",
    "OnlineSecurity": "No",
    "OnlineBackup": "Yes",
    "DeviceProtection": "No",
    "TechSupport": "No",
    "StreamingTV": "No",
    "StreamingMovies": "No",
    "Contract": "Month-to-month",
    "PaperlessBilling": "Yes",
    "PaymentMethod": "Electronic check",
    "MonthlyCharges": 29.85,
    "TotalCharges": 29.85,
}
ANSWER = {
    "customerID": "7590-VHVEG",
    "churn_probability": 0.6312,
    "churn_prediction": True,
    "risk_level": "High",
    "recommended_action": "Call: offer a one- or two-year contract with a loyalty discount",
    "top_factors": [{"feature": "Contract", "value": "Month-to-month", "contribution": 0.7731}],
    "model_version": "3",
}


AGENT_TIME = "2025-11-26T14:00:00.123456789Z"


def event(event_type: str, body: bytes, **options: str):
    return parse_event(Headers(kserve_headers("ce-1", event_type, time_text=AGENT_TIME, **options)), body)


def test_agent_request_event_is_decoded_with_its_extensions():
    parsed = event(REQUEST_TYPE, v1_request([CUSTOMER]))
    assert parsed.kind == "request"
    assert parsed.id == "ce-1"
    assert parsed.source == "http://localhost:9081/"
    assert parsed.inference_service == "churn"
    assert parsed.component == "transformer"
    assert parsed.time == datetime(2025, 11, 26, 14, 0, 0, 123456, tzinfo=UTC)
    assert parse_request(parsed) == [CUSTOMER]


def test_v1_response_answers_keep_order_probability_and_echoed_id():
    answers = parse_response(event(RESPONSE_TYPE, v1_response([ANSWER, {**ANSWER, "customerID": "x"}])))
    assert [a.customer_id for a in answers] == ["7590-VHVEG", "x"]
    assert answers[0].probability == pytest.approx(0.6312)
    assert answers[0].prediction is True
    assert answers[0].risk_level == "High"
    assert answers[0].model_version == "3"


def test_v2_request_and_response_tensors_become_rows():
    from churn_core.contract import telco_contract

    contract = telco_contract()
    second = {**CUSTOMER, "customerID": "0002", "tenure": 40}
    customers = parse_request(event(REQUEST_TYPE, v2_request([CUSTOMER, second], contract)))
    assert customers[1]["tenure"] == 40
    assert customers[0]["Contract"] == "Month-to-month"
    answers = parse_response(
        event(
            RESPONSE_TYPE,
            v2_response([ANSWER, {**ANSWER, "customerID": "0002", "churn_prediction": False}], "3"),
        )
    )
    assert [a.customer_id for a in answers] == ["7590-VHVEG", "0002"]
    assert [a.prediction for a in answers] == [True, False]
    assert answers[1].model_version == "3"


def test_percent_encoded_attributes_are_decoded():
    headers = kserve_headers("id%20with%20space", REQUEST_TYPE)
    assert parse_event(Headers(headers), v1_request([CUSTOMER])).id == "id with space"


def test_structured_mode_event_is_accepted():
    envelope = {
        "specversion": "1.0",
        "id": "s-1",
        "type": RESPONSE_TYPE,
        "source": "http://localhost:9081/",
        "datacontenttype": "application/json",
        "data": {"predictions": [ANSWER]},
    }
    parsed = parse_event(
        Headers({"content-type": "application/cloudevents+json"}), json.dumps(envelope).encode()
    )
    assert parse_response(parsed)[0].probability == pytest.approx(0.6312)


def test_missing_content_type_is_sniffed_as_json():
    # KServe copies the caller's Content-Type; curl -d without -H sends none.
    parsed = event(REQUEST_TYPE, v1_request([CUSTOMER]), content_type="")
    assert parse_request(parsed)[0]["customerID"] == "7590-VHVEG"


@pytest.mark.parametrize(
    ("headers", "body", "names"),
    [
        ({"ce-id": "x"}, b"{}", "ce-specversion"),
        ({**kserve_headers("", REQUEST_TYPE)}, b"{}", "ce-id"),
        ({**kserve_headers("a", "com.example.other")}, b"{}", "ce-type"),
        ({**kserve_headers("a", REQUEST_TYPE), "Ce-Specversion": "0.3"}, b"{}", "ce-specversion"),
        ({**kserve_headers("a", REQUEST_TYPE), "Ce-Time": "yesterday"}, b"{}", "ce-time"),
        (
            {k: v for k, v in kserve_headers("a", REQUEST_TYPE).items() if k != "Ce-Source"},
            b"{}",
            "ce-source",
        ),
    ],
)
def test_malformed_envelope_names_the_attribute(headers, body, names):
    with pytest.raises(EventError, match=names) as caught:
        parse_event(Headers(headers), body)
    assert 400 <= caught.value.status < 500


@pytest.mark.parametrize(
    ("event_type", "body", "names"),
    [
        (REQUEST_TYPE, b"not json", "not valid JSON"),
        (REQUEST_TYPE, b"[1, 2]", "not a JSON object"),
        (REQUEST_TYPE, b'{"data": []}', "neither 'instances'"),
        (REQUEST_TYPE, b'{"instances": []}', "non-empty"),
        (REQUEST_TYPE, b'{"instances": [[1, 2]]}', r"instances\[0\]"),
        (REQUEST_TYPE, b'{"inputs": [{"name": "tenure", "shape": [3], "data": [1, 2]}]}', "shape"),
        (RESPONSE_TYPE, b'{"predictions": [{"churn_prediction": true}]}', "churn_probability"),
        (
            RESPONSE_TYPE,
            b'{"predictions": [{"churn_probability": 1.5, "churn_prediction": true}]}',
            "outside",
        ),
        (
            RESPONSE_TYPE,
            b'{"predictions": [{"churn_probability": 0.5, "churn_prediction": "maybe"}]}',
            "boolean",
        ),
    ],
)
def test_malformed_payload_names_the_problem(event_type, body, names):
    parsed = event(event_type, body)
    parse = parse_request if event_type == REQUEST_TYPE else parse_response
    with pytest.raises(EventError, match=names) as caught:
        parse(parsed)
    assert 400 <= caught.value.status < 500


def test_binary_tensor_payload_is_refused_as_unsupported_media():
    parsed = event(REQUEST_TYPE, b"\x00\x01", content_type="application/octet-stream")
    with pytest.raises(EventError) as caught:
        parse_request(parsed)
    assert caught.value.status == 415


# --- join and windows ---------------------------------------------------------------------------------


def halves(event_id: str, n: int = 1):
    """The join's halves of one logged call, made from the events exactly as the service makes them."""
    compactor = Compactor(telco_contract())
    request = parse_event(
        Headers(kserve_headers(event_id, REQUEST_TYPE, time_text=AGENT_TIME)), v1_request([CUSTOMER] * n)
    )
    response = parse_event(
        Headers(kserve_headers(event_id, RESPONSE_TYPE, time_text=AGENT_TIME)), v1_response([ANSWER] * n)
    )
    return (
        compactor.request(request, event_key(request), parse_request(request)),
        compactor.response(response, event_key(response), parse_response(response)),
    )


FIELDS = [k for k in CUSTOMER if k != "customerID"]
NOW = datetime(2025, 11, 26, tzinfo=UTC)


def pending_join(max_pending=10, ttl_seconds=60.0, clock=time.monotonic, max_bytes=1 << 30):
    return PendingJoin(
        FIELDS,
        max_pending=max_pending,
        max_bytes=max_bytes,
        ttl_seconds=ttl_seconds,
        recent=RecentKeys(ttl_seconds=600, max_keys=1000, clock=clock),
        clock=clock,
    )


def ce_id(stored_id: str) -> str:
    """The CloudEvent id a stored call id starts with (`<ce-id>~<digest of both halves>`)."""
    return stored_id.rsplit("~", 1)[0]


@pytest.mark.parametrize("response_first", [False, True])
def test_join_pairs_halves_in_either_order(response_first):
    join = pending_join()
    request, response = halves("e1", n=2)
    first, second = (response, request) if response_first else (request, response)
    assert join.add(first, NOW).status == "pending"
    outcome = join.add(second, NOW)
    assert outcome.status == "joined"
    assert [(ce_id(p.event_id), p.row_index, p.customer_id) for p in outcome.predictions] == [
        ("e1", 0, "7590-VHVEG"),
        ("e1", 1, "7590-VHVEG"),
    ]
    assert outcome.predictions[0].features["Contract"] == "Month-to-month"
    assert outcome.predictions[0].predicted_at == datetime(2025, 11, 26, 14, 0, 0, 123456, tzinfo=UTC)
    assert len(join) == 0


def test_redelivered_pair_is_reported_duplicate_not_joined_twice():
    join = pending_join()
    request, response = halves("e1")
    join.add(request, NOW)
    join.add(response, NOW)
    assert join.add(request, NOW).status == "duplicate"
    assert join.add(response, NOW).status == "duplicate"


def test_mismatched_row_counts_are_refused_with_422():
    join = pending_join()
    request, _ = halves("e1", n=2)
    _, response = halves("e1", n=1)
    join.add(request, NOW)
    with pytest.raises(EventError, match="2 customers but response 1") as caught:
        join.add(response, NOW)
    assert caught.value.status == 422


def test_unanswered_request_expires_after_ttl_and_pending_is_bounded():
    clock = [0.0]
    join = pending_join(max_pending=3, ttl_seconds=30, clock=lambda: clock[0])
    for index in range(5):
        outcome = join.add(halves(f"r{index}")[0], NOW)
    assert len(outcome.evicted) == 1
    assert len(join) == 3
    clock[0] = 31.0
    assert len(join.expire()) == 3
    assert len(join) == 0


def test_windows_close_by_size_and_by_age_once_large_enough():
    clock = [0.0]
    buffer = WindowBuffer(FIELDS, size=20, min_size=10, max_age_seconds=60, clock=lambda: clock[0])
    join = pending_join()
    request, response = halves("w", n=25)
    join.add(request, NOW)
    rows = join.add(response, NOW).predictions
    closed = buffer.add(rows)
    assert [len(w) for w in closed] == [20]
    assert closed[0].columns["tenure"][:2] == [1, 1]
    assert closed[0].model_version == "3"
    clock[0] = 120.0
    assert buffer.due() is None  # 5 rows: too few to test even though old
    request, response = halves("w2", n=5)
    join.add(request, NOW)
    buffer.add(join.add(response, NOW).predictions)
    window = buffer.due()
    assert window is not None
    assert len(window) == 10
